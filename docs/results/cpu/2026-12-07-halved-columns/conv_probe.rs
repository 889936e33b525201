// The per-layer timer behind the README's "Stride-2 columns without gathers" figures: each
// layer of `resnet-small` with a stride-2 column, at batch 128, timed for a second at a time,
// alternating gathers (the switch of `probe-switch.patch` on) and halved copies (off), in one
// process. To re-run: `git apply docs/results/cpu/2026-12-07-halved-columns/probe-switch.patch`, copy this file to
// crates/vitrine-core/examples/conv_probe.rs, then
//   cargo build --release -p vitrine-core --example conv_probe && target/release/examples/conv_probe
use burn::backend::Flex;
use burn::backend::flex::ops::{PROBE_OFF, conv2d_fused};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use std::sync::atomic::Ordering;
use std::time::Instant;

fn main() {
    let device = Device::flex();
    // (inputs, outputs, kernel, stride, input side)
    for &(ci, co, k, stride, hw) in &[(32usize, 64usize, 3usize, 2usize, 28usize), (32, 64, 1, 2, 28), (64, 128, 3, 2, 14), (64, 128, 1, 2, 14)] {
        let pad = k / 2;
        let w = Tensor::<4>::random([co, ci, k, k], burn::tensor::Distribution::Default, &device);
        let b = Tensor::<1>::random([co], burn::tensor::Distribution::Default, &device);
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let x = Tensor::<4>::random([128, ci, hw, hw], burn::tensor::Distribution::Default, &device);
        let run = |x: &Tensor<4>| {
            let p = |t: Tensor<4>| t.try_into_primitive::<Flex>().ok().unwrap();
            drop(conv2d_fused(p(x.clone()), p(w.clone()), Some(b.clone().try_into_primitive::<Flex>().ok().unwrap()), None, true, &options));
        };
        for round in 0..6 {
            let gathers = round % 2 == 0;
            PROBE_OFF.store(gathers, Ordering::Relaxed);
            for _ in 0..3 {
                run(&x);
            }
            let (start, mut calls) = (Instant::now(), 0);
            while start.elapsed().as_secs_f64() < 1.0 {
                run(&x);
                calls += 1;
            }
            let per_image = start.elapsed().as_secs_f64() / (calls * 128) as f64 * 1e6;
            println!("{ci}->{co} k{k} s{stride} {hw}x{hw} {}: {per_image:.1} us/image", if gathers { "gathers" } else { "halves" });
        }
    }
}
