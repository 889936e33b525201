//! Vectors of f32 for kernels written once for two instruction sets (Vitrine's patch; see
//! `PATCH.md`): 16 lanes of AVX-512, or 8 of AVX2 with FMA on the many x86-64 CPUs without
//! AVX-512 (AMD's before Zen 4, Intel's desktop and laptop parts). A kernel generic over
//! [`Lanes`] runs through [`per_isa!`], which compiles it inside a function enabling the
//! instruction set the CPU has, so that the intrinsics inline.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicBool, Ordering};

/// Whether the kernels may run AVX-512 code where the CPU has it (see [`allow_avx512`]).
static AVX512_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Lets Vitrine's kernels use AVX-512 where the CPU has it (the default), or keeps them on
/// their AVX2 code, to test or time that code on an AVX-512 machine. gemm's own kernels are
/// not affected.
pub fn allow_avx512(allowed: bool) {
    AVX512_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// The vector instructions a kernel runs on, chosen once per call from the CPU's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest instruction set this CPU has (AVX2 counts with FMA beside it), if any.
    pub(super) fn detect() -> Option<Isa> {
        #[cfg(feature = "std")]
        {
            if std::is_x86_feature_detected!("avx512f") && AVX512_ALLOWED.load(Ordering::Relaxed) {
                return Some(Isa::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }
}

/// Runs `f` compiled with AVX-512F enabled.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `$body` with `$v` the vector type of `$isa` ([`Avx512`] or [`Avx2`]), compiled for that
/// instruction set. Unsafe: the CPU must have it (`Isa::detect` said so).
macro_rules! per_isa {
    ($isa:expr, $v:ident => $body:expr) => {
        match $isa {
            $crate::ops::lanes::Isa::Avx512 => {
                #[allow(dead_code)]
                type $v = $crate::ops::lanes::Avx512;
                $crate::ops::lanes::on_avx512(|| $body)
            }
            $crate::ops::lanes::Isa::Avx2 => {
                #[allow(dead_code)]
                type $v = $crate::ops::lanes::Avx2;
                $crate::ops::lanes::on_avx2(|| $body)
            }
        }
    };
}
pub(super) use per_isa;

/// A vector of `LANES` f32. Values exist only through the unsafe constructors, whose contract
/// is that the CPU has the instruction set; the arithmetic on them is then safe.
pub(super) trait Lanes: Copy {
    const LANES: usize;
    /// Lanes `0..count` (all where `count ≥ LANES`) from `ptr`, the rest zero.
    ///
    /// # Safety
    /// The instruction set is available; `ptr` is readable at `0..count.min(LANES)`.
    unsafe fn load(ptr: *const f32, count: usize) -> Self;
    /// Every lane `value`.
    ///
    /// # Safety
    /// The instruction set is available.
    unsafe fn splat(value: f32) -> Self;
    /// Stores lanes `0..count` (all where `count ≥ LANES`).
    ///
    /// # Safety
    /// `ptr` is writable at `0..count.min(LANES)`.
    unsafe fn store(self, ptr: *mut f32, count: usize);
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// `self·b + c`, rounded once.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `c − self·b`, rounded once.
    fn neg_mul_add(self, b: Self, c: Self) -> Self;
}

/// 16 lanes of AVX-512.
#[derive(Clone, Copy)]
pub(super) struct Avx512(__m512);

/// 8 lanes of AVX2 (with FMA).
#[derive(Clone, Copy)]
pub(super) struct Avx2(__m256);

/// The first `count` (≤ 16) lanes as an AVX-512 mask.
#[inline(always)]
pub(super) fn mask16(count: usize) -> __mmask16 {
    ((1u32 << count.min(16)) - 1) as __mmask16
}

impl Lanes for Avx512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn load(ptr: *const f32, count: usize) -> Self {
        // SAFETY: the caller's contract; the load is masked to `count`.
        Self(unsafe { _mm512_maskz_loadu_ps(mask16(count), ptr) })
    }
    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        // SAFETY: the caller's contract.
        Self(unsafe { _mm512_set1_ps(value) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32, count: usize) {
        // SAFETY: the caller's contract; the store is masked to `count`.
        unsafe { _mm512_mask_storeu_ps(ptr, mask16(count), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: a value of this type exists only where AVX-512F is available.
        Self(unsafe { _mm512_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_fnmadd_ps(self.0, b.0, c.0) })
    }
}

/// The first `count` (≤ 8) lanes as an AVX2 mask (all bits set in those lanes).
///
/// # Safety
/// AVX2 is available.
#[inline(always)]
pub(super) unsafe fn mask8(count: usize) -> __m256i {
    // SAFETY: the caller has AVX2.
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(count.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
}

/// Lanes `0..count` (all where `count ≥ 8`) from `ptr`, the rest zero. Whole vectors skip the
/// mask: AMD's masked moves are slow.
///
/// # Safety
/// AVX2 is available; `ptr` is readable at `0..count.min(8)` (masked lanes are not read).
#[inline(always)]
pub(super) unsafe fn load8(ptr: *const f32, count: usize) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { if count >= 8 { _mm256_loadu_ps(ptr) } else { _mm256_maskload_ps(ptr, mask8(count)) } }
}

impl Lanes for Avx2 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn load(ptr: *const f32, count: usize) -> Self {
        // SAFETY: the caller's contract.
        Self(unsafe { load8(ptr, count) })
    }
    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        // SAFETY: the caller's contract.
        Self(unsafe { _mm256_set1_ps(value) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32, count: usize) {
        // SAFETY: the caller's contract, as for `load`.
        unsafe {
            if count >= 8 {
                _mm256_storeu_ps(ptr, self.0)
            } else {
                _mm256_maskstore_ps(ptr, mask8(count), self.0)
            }
        }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: a value of this type exists only where AVX2 and FMA are available.
        Self(unsafe { _mm256_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm256_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm256_fnmadd_ps(self.0, b.0, c.0) })
    }
}
