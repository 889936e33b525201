//! e^x, tanh and the logistic sigmoid for f32 written without branches or library calls, so
//! that loops over them vectorise (Vitrine patch). Upstream calls libm per element; these were
//! 7% of a BiLSTM classifier's training step (attention's tanh, softmax's exp). Accuracy: within
//! a few ulp of libm (checked by Vitrine's `flex_exp_tanh_and_sigmoid_match_libm`).

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
