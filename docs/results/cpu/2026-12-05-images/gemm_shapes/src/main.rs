//! One-thread GFLOP/s of gemm 0.19 at the shapes of `dcgan`'s 64 <-> 128-channel layer
//! (`[128 x 1024] x [1024 x 49]` an image), with the columns of G images side by side: the
//! forward product, the input gradient's, the weight gradient's, and the forward transposed.
//! Command: see Cargo.toml.
use std::time::Instant;
// gemm with dst row-major (dst_cs=1); lhs (ptr, cs, rs); rhs (ptr, cs, rs)
unsafe fn g(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: usize, acc: bool, lhs: (*const f32, isize, isize), rhs: (*const f32, isize, isize)) {
    gemm::gemm(m, n, k, dst, 1, dst_rs as isize, acc, lhs.0, lhs.1, lhs.2, rhs.0, rhs.1, rhs.2, 1.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
}
fn main() {
    let t2 = std::env::args().nth(1).is_some();
    if t2 { let h = std::thread::spawn(|| run(false)); run(true); h.join().unwrap(); } else { run(true); }
}
fn run(print: bool) {
    let (co, kk, p) = (128usize, 1024usize, 49usize);
    let w = vec![0.5f32; co * kk];
    for gsz in [1usize, 2, 4, 8, 16, 32] {
        let n = p * gsz;
        let col = vec![0.25f32; kk * n];
        let mut y = vec![0f32; co * n];
        let mut colg = vec![0f32; kk * n];
        let mut dw = vec![0f32; co * kk];
        let dy = vec![0.1f32; co * n];
        let reps = 128 / gsz;
        for (name, f) in [("fwd  [co,n,K]", 0), ("igrad[K,n,co]", 1), ("wgrad[co,K,n]", 2), ("fwdT [n,co,K]", 3)] {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    unsafe {
                        match f {
                            0 => g(co, n, kk, y.as_mut_ptr(), n, false, (w.as_ptr(), 1, kk as isize), (col.as_ptr(), 1, n as isize)),
                            1 => g(kk, n, co, colg.as_mut_ptr(), n, false, (w.as_ptr(), kk as isize, 1), (dy.as_ptr(), 1, n as isize)),
                            2 => g(co, kk, n, dw.as_mut_ptr(), kk, true, (dy.as_ptr(), 1, n as isize), (col.as_ptr(), n as isize, 1)),
                            _ => g(n, co, kk, y.as_mut_ptr(), co, false, (col.as_ptr(), n as isize, 1), (w.as_ptr(), kk as isize, 1)),
                        }
                    }
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let flops = 2.0 * (co * kk * p * 128) as f64;
            if print { println!("G={gsz:2} {name}: {:6.1} GFLOP/s (1 thread)", flops / best / 1e9); }
        }
    }
}
