// The scratch timing of the step kernel alone that the README's bullet "An LSTM step as one
// product" quotes (GFLOP/s a thread for text-lstm-attn's step: batch 64, 128 inputs, 128 hidden
// units). Not a test of the project: append it to
// crates/vitrine-text/src/recurrence/step_kernel.rs and run
//   XDG_RUNTIME_DIR=/tmp cargo test --release --workspace --lib -- speed_probe --nocapture
// ("without the update": the same after replacing the update in `run` by a store of the sums).

#[cfg(test)]
mod speed_probe {
    #[test]
    fn probe() {
        use super::*;
        let (batch, input, hidden) = (64, 128, 128);
        let g = 4 * hidden;
        let w_ih: Vec<f32> = (0..input * g).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let w_hh: Vec<f32> = (0..hidden * g).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
        let b = vec![0.01f32; g];
        let p = PackedCell::new(4, &w_ih, &w_hh, &b, &b, input, hidden);
        let x = vec![0.5f32; batch * input];
        let (mut h, mut n, mut c) = (vec![0.1f32; batch * hidden], vec![0.0; batch * hidden], vec![0.0; batch * hidden]);
        let (mut partial, mut out) = (PackedCell::scratch(batch), vec![0.0f32; batch * hidden]);
        let steps = 20000;
        let t = std::time::Instant::now();
        for _ in 0..steps {
            unsafe { step(&p, &x, &h, &mut n, &mut c, &mut partial, |_| true, out.as_mut_ptr(), hidden) };
            std::mem::swap(&mut h, &mut n);
        }
        let dt = t.elapsed().as_secs_f64();
        eprintln!("PROBE {:.1} GFLOP/s", (steps * batch * (input + hidden) * g * 2) as f64 / dt / 1e9);
    }
}
