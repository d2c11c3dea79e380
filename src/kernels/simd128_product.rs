//! The convolutions' matrix product in the browser, with WebAssembly's 128-bit vectors:
//! dst (m × n) = (dst +) lhs (m × k) · rhs (k × n), where dst's and rhs's rows are contiguous.
//!
//! gemm's simd128 micro-kernel computes 12 × 4 values of dst at once, more vectors than V8's
//! x86-64 code keeps in registers; in a profile of the page it took 65 % of a reverse step. This
//! kernel computes 4 rows × 8 columns of dst per block (eight accumulators, two vectors of rhs and
//! one broadcast value of lhs live), which took the products' share of a step of 16 digits from
//! 277 to 200 ms (docs/performance.md). Natively gemm keeps its AVX-512 / AVX2 kernels.
//!
//! Each value of dst is the same sum in the same order on every path (two vectors, one vector,
//! one column): Σ_p lhs[i, p] · rhs[p, j] from p = 0 up, then added to dst when accumulating. So a
//! value does not depend on where its column falls in a block, and an image's result does not
//! depend on the rest of the batch.
//!
//! Each step of the sum is a multiply-add, in one of two page modules:
//! - the page's own module (WebAssembly SIMD, every current browser): `f32x4.mul` then
//!   `f32x4.add`, each rounded;
//! - built with the `relaxed-simd` feature (the page's second CPU module, which its loader picks
//!   where the browser validates relaxed SIMD: `scripts/post_build.py`): `f32x4.relaxed_madd`, one
//!   instruction, fused on a CPU with FMA (the browser decides, the same way for every call), so
//!   each step is rounded once or twice but the same on every path: 1.2–1.4× the products' speed
//!   in Chromium on AVX2, a step of the page 1.1–1.15× (docs/performance.md).
//!
//! The functions down to the blocks carry the `relaxed-simd` target feature in that build, so that
//! the instruction is inlined into the loops; the page's own module never contains it.

use core::arch::wasm32::{f32x4_add, f32x4_extract_lane, f32x4_splat, v128, v128_load, v128_load32_splat, v128_store};

/// Rows of dst that one block computes.
const ROWS: usize = 4;

/// A matrix whose rows are contiguous (dst, rhs): its first value and its row stride.
#[derive(Clone, Copy)]
struct Rows<P> {
    first: P,
    row_stride: isize,
}

/// lhs: its first value and its row and column strides.
#[derive(Clone, Copy)]
struct Lhs {
    first: *const f32,
    row_stride: isize,
    column_stride: isize,
}

/// dst = (dst if `accumulate`) + lhs · rhs for an m × k lhs and a k × n rhs: dst and rhs given by
/// their first value and row stride (their columns contiguous), lhs by its first value and its
/// row and column strides.
///
/// # Safety
/// Every element the strides reach must lie inside its operand's allocation.
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"))]
pub(super) unsafe fn product(
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs): (*const f32, isize),
) {
    let dst = Rows {
        first: dst,
        row_stride: dst_rs,
    };
    let lhs = Lhs {
        first: lhs,
        row_stride: lhs_rs,
        column_stride: lhs_cs,
    };
    let rhs = Rows {
        first: rhs,
        row_stride: rhs_rs,
    };
    let mut row = 0;
    // SAFETY (both loops): rows row..row + R of dst and lhs lie inside them, as the caller
    // promises for all m rows.
    while row + ROWS <= m {
        unsafe { row_block::<ROWS>(accumulate, (n, k), row, dst, lhs, rhs) };
        row += ROWS;
    }
    while row < m {
        unsafe { row_block::<1>(accumulate, (n, k), row, dst, lhs, rhs) };
        row += 1;
    }
}

/// Rows `row`..`row + R` of dst: eight columns at a time, then four, then one.
///
/// # Safety
/// As for [`product`], for these rows.
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"), inline)]
#[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
unsafe fn row_block<const R: usize>(
    accumulate: bool,
    (n, k): (usize, usize),
    row: usize,
    dst: Rows<*mut f32>,
    lhs: Lhs,
    rhs: Rows<*const f32>,
) {
    // SAFETY: the caller keeps rows row..row + R in bounds; each block below reads and writes
    // only columns column..column + its width, which are below n.
    unsafe {
        let dst = Rows {
            first: dst.first.offset(row as isize * dst.row_stride),
            ..dst
        };
        let lhs = Lhs {
            first: lhs.first.offset(row as isize * lhs.row_stride),
            ..lhs
        };
        let mut column = 0;
        while column + 8 <= n {
            block::<v128, R, 2>(accumulate, k, column, dst, lhs, rhs);
            column += 8;
        }
        if column + 4 <= n {
            block::<v128, R, 1>(accumulate, k, column, dst, lhs, rhs);
            column += 4;
        }
        while column < n {
            block::<f32, R, 1>(accumulate, k, column, dst, lhs, rhs);
            column += 1;
        }
    }
}

/// What a block keeps its sums in: a vector of four values, or one value for the last columns.
/// One value takes the vector's multiply-add in one lane, so a column's sums are the same in either.
trait Lanes: Copy {
    /// Columns of dst in one.
    const WIDTH: usize;
    fn zero() -> Self;
    /// `WIDTH` values from `from` on.
    ///
    /// # Safety
    /// They must lie inside an allocation.
    unsafe fn load(from: *const f32) -> Self;
    /// The value at `from`, in every lane.
    ///
    /// # Safety
    /// It must lie inside an allocation.
    unsafe fn broadcast(from: *const f32) -> Self;
    /// `WIDTH` values to `to` on.
    ///
    /// # Safety
    /// They must lie inside an allocation.
    unsafe fn store(self, to: *mut f32);
    fn add(self, other: Self) -> Self;
    /// self + a · b: the step of a sum (see the module's doc for how it is rounded).
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Lanes for v128 {
    const WIDTH: usize = 4;
    #[inline(always)]
    fn zero() -> Self {
        f32x4_splat(0.0)
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's promise; WebAssembly's vector loads need no alignment.
        unsafe { v128_load(from.cast()) }
    }
    #[inline(always)]
    unsafe fn broadcast(from: *const f32) -> Self {
        // SAFETY: the caller's promise.
        unsafe { v128_load32_splat(from.cast()) }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: the caller's promise; WebAssembly's vector stores need no alignment.
        unsafe { v128_store(to.cast(), self) }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        f32x4_add(self, other)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        #[cfg(feature = "relaxed-simd")]
        return core::arch::wasm32::f32x4_relaxed_madd(a, b, self);
        #[cfg(not(feature = "relaxed-simd"))]
        f32x4_add(self, core::arch::wasm32::f32x4_mul(a, b))
    }
}

impl Lanes for f32 {
    const WIDTH: usize = 1;
    #[inline(always)]
    fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's promise.
        unsafe { *from }
    }
    #[inline(always)]
    unsafe fn broadcast(from: *const f32) -> Self {
        // SAFETY: the caller's promise.
        unsafe { *from }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: the caller's promise.
        unsafe { *to = self }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32x4_extract_lane::<0>(f32x4_splat(self).mul_add(f32x4_splat(a), f32x4_splat(b)))
    }
}

/// R rows × V·`L::WIDTH` columns of dst from `column` on, in R·V accumulators.
///
/// # Safety
/// As for [`row_block`], for these columns.
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"), inline)]
#[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
unsafe fn block<L: Lanes, const R: usize, const V: usize>(
    accumulate: bool,
    k: usize,
    column: usize,
    dst: Rows<*mut f32>,
    lhs: Lhs,
    rhs: Rows<*const f32>,
) {
    let mut sums = [[L::zero(); V]; R];
    // SAFETY: rows 0..R of lhs and dst, rows 0..k of rhs and the columns column..column +
    // V·L::WIDTH are in bounds (the caller's promise).
    unsafe {
        for p in 0..k {
            let rhs_row = rhs.first.offset(p as isize * rhs.row_stride).add(column);
            let b: [L; V] = core::array::from_fn(|v| L::load(rhs_row.add(v * L::WIDTH)));
            for (r, sums) in sums.iter_mut().enumerate() {
                let a = lhs
                    .first
                    .offset(r as isize * lhs.row_stride + p as isize * lhs.column_stride);
                let a = L::broadcast(a);
                for (sum, &b) in sums.iter_mut().zip(&b) {
                    *sum = sum.mul_add(a, b);
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            let dst_row = dst.first.offset(r as isize * dst.row_stride).add(column);
            for (v, &sum) in sums.iter().enumerate() {
                let out = dst_row.add(v * L::WIDTH);
                let value = if accumulate { L::load(out).add(sum) } else { sum };
                value.store(out);
            }
        }
    }
}
