//! Functions compiled for the CPU they run on. The release build targets the x86-64 baseline
//! (SSE2), so that one binary runs everywhere; a hot loop written as a [`compiled_per_cpu!`]
//! function vectorises with AVX-512 or AVX2 + FMA where the CPU has them.

/// Defines a function whose body is compiled three times, for AVX-512, for AVX2 + FMA and for the
/// baseline, and picks one at run time (the feature checks are cached after the first call).
/// Write the body with plain slices and loops the compiler can vectorise; call it per row or per
/// chunk, not per element.
#[macro_export]
macro_rules! compiled_per_cpu {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Independent accumulators in [`lane_sum`] and [`lane_max`]: enough for AVX-512.
const LANES: usize = 16;

/// Σ f(v) over `row`, in lanes: a single running sum keeps a loop scalar. Inlined into the
/// [`compiled_per_cpu!`] function that calls it, which vectorises it.
#[inline(always)]
pub fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

/// Σ a·b over two rows of one length, in lanes as [`lane_sum`].
#[inline(always)]
pub fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "rows of one length");
    let mut lanes = [0f32; LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum::<f32>();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// The largest value of `row` (−∞ when empty), in lanes as [`lane_sum`].
#[inline(always)]
pub fn lane_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    lanes.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}
