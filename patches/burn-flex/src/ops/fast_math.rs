//! e^x, tanh, the logistic sigmoid and erf for f32 written without branches or library calls,
//! so that loops over them vectorise (Vitrine patch). Upstream calls libm per element; these were
//! 7% of a BiLSTM classifier's training step (attention's tanh, softmax's exp), and libm's `erff`
//! alone 12% of `sasrec`'s (GELU and its gradient). Accuracy: exp, tanh and the sigmoid within a
//! few ulp of libm, erf within 4.1e-7 of the exact value (checked by Vitrine's
//! `flex_exp_tanh_sigmoid_and_erf_match_libm`).

/// e^x: Cephes' `expf` (reduction by multiples of ln 2, a degree-5 polynomial), 2ⁿ built from
/// its bits as two factors so that it stays finite up to ln(f32::MAX) and reaches the subnormals
/// below e^-87.3 as libm does. +inf above ln(f32::MAX), 0 below e^-104; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer, kept in the low bits
    let clamped = x.clamp(-104.0, 88.722_84);
    let shifted = clamped * core::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    // n from `shifted`'s bits (a float-to-integer conversion would not vectorise); 2ⁿ as
    // 2^⌊n/2⌋·2^(n-⌊n/2⌋), each factor a normal f32 for n in [-150, 128].
    let n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let half = n >> 1;
    let power = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let y = (p * r * r + r + 1.0) * power(half) * power(n - half);
    if x > 88.722_84 { f32::INFINITY } else { y }
}

/// tanh: Cephes' odd polynomial near 0 (where 1 - 2/(e^2x + 1) would lose the small values),
/// 1 - 2/(e^2x + 1) elsewhere.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let z = x * x;
    let small = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 0.133_314_42) * z - 0.333_332_82) * z * x + x;
    let large = 1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0);
    if x.abs() < 0.625 { small } else { large }
}

/// 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// erf: Eigen's rational approximation for f32 (`generic_fast_erf_float`, also TensorFlow's), an
/// odd degree-13 polynomial over an even degree-8 one on [-4, 4], where erf reaches ±1 in f32.
/// At most 4.0e-7 from the exact value, relative too, over [-6, 6] (PyTorch's vectorised CPU erf: 1.5e-7 absolute);
/// NaN stays NaN.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.72614225801306e-10 * x2 + 2.77068142495902e-08;
    p = p * x2 - 2.10102402082508e-06;
    p = p * x2 - 5.69250639462346e-05;
    p = p * x2 - 7.34990630326855e-04;
    p = p * x2 - 2.95459980854025e-03;
    p = p * x2 - 1.60960333262415e-02;
    let mut q = -1.45660718464996e-05 * x2 - 2.13374055278905e-04;
    q = q * x2 - 1.68282697438203e-03;
    q = q * x2 - 7.37332916720468e-03;
    q = q * x2 - 1.42647390514189e-02;
    x * p / q
}
