//! The 3×3 "same" convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016,
//! "Fast Algorithms for Convolutional Neural Networks"): each 2×2 block of output pixels from the
//! 4×4 input patch around it with 16 multiplications per (input, output) channel pair instead of 36.
//!
//! With g a 3×3 kernel and d a 4×4 input patch, the 2×2 output block is
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, where
//!
//! ```text
//!      ⎡1  0  −1  0⎤        ⎡ 1    0    0 ⎤        ⎡1  1   1   0⎤
//! Bᵀ = ⎢0  1   1  0⎥    G = ⎢1/2  1/2  1/2⎥   Aᵀ = ⎣0  1  −1  −1⎦
//!      ⎢0 −1   1  0⎥        ⎢1/2 −1/2  1/2⎥
//!      ⎣0  1   0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! Summed over the input channels, the elementwise product becomes 16 matrix products, one per
//! position ξ of the 4×4 transformed patch: M_ξ `[c_out, tiles]` = U_ξ `[c_out, c_in]` ·
//! V_ξ `[c_in, tiles]`, with U = G g Gᵀ (the weights, transformed once per call) and V = Bᵀ d B
//! (the input, per image). The output transform then adds Aᵀ M A onto the output, which holds the
//! bias. Odd sizes are covered by tiles that reach one pixel past the image: their inputs there
//! are zero padding and their outputs there are dropped.
//!
//! The weight gradient is the adjoint of the same steps: ∂L/∂M = A (∂L/∂Y) Aᵀ per tile, 16 products
//! ∂L/∂U_ξ = ∂L/∂M_ξ · V_ξᵀ summed over the images, and ∂L/∂g = Gᵀ (∂L/∂U) G.

use super::conv_ops::{add_product, with_scratch, write_product};

/// The 1-D input transform Bᵀ d of four values.
#[inline(always)]
fn input_1d([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// The 1-D kernel transform G g of three values.
#[inline(always)]
fn kernel_1d([g0, g1, g2]: [f32; 3]) -> [f32; 4] {
    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
}

/// The 1-D output transform Aᵀ m of four values.
#[inline(always)]
fn output_1d([m0, m1, m2, m3]: [f32; 4]) -> [f32; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// The adjoint of [`output_1d`], A y of two values: the gradient of its four inputs.
#[inline(always)]
fn output_adjoint([y0, y1]: [f32; 2]) -> [f32; 4] {
    [y0, y0 + y1, y0 - y1, -y1]
}

/// The adjoint of [`kernel_1d`], Gᵀ u of four values: the gradient of its three inputs.
#[inline(always)]
fn kernel_adjoint([u0, u1, u2, u3]: [f32; 4]) -> [f32; 3] {
    [u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3]
}

/// The weights `[c_out, c_in, 3, 3]` transformed: `[16, c_out, c_in]`, position ξ = 4·a + b of
/// U = G g Gᵀ for every channel pair, so U_ξ is the left factor of product ξ as it is. Blocks of
/// channel pairs at a time, their nine taps regrouped tap by tap, so both 1-D transforms run
/// across the block.
pub(super) fn transformed_weights(weight: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let pairs = c_out * c_in;
    let mut u = vec![0.0f32; 16 * pairs];
    let mut taps = [[0.0f32; BLOCK]; 9];
    let mut rows = [[[0.0f32; BLOCK]; 3]; 4];
    for first in (0..pairs).step_by(BLOCK) {
        let len = BLOCK.min(pairs - first);
        for (p, g) in weight[9 * first..9 * (first + len)].chunks_exact(9).enumerate() {
            for (tap, &value) in taps.iter_mut().zip(g) {
                tap[p] = value;
            }
        }
        // G g: each kernel column x transformed along y, into rows[a][x].
        for x in 0..3 {
            for p in 0..len {
                let [r0, r1, r2, r3] = kernel_1d([taps[x][p], taps[3 + x][p], taps[6 + x][p]]);
                (rows[0][x][p], rows[1][x][p], rows[2][x][p], rows[3][x][p]) = (r0, r1, r2, r3);
            }
        }
        // (G g) Gᵀ: each row a transformed along x.
        for (a, row) in rows.iter().enumerate() {
            let [u0, u1, u2, u3] = strided_mut::<4>(&mut u, 4 * a * pairs + first, pairs, len);
            for p in 0..len {
                [u0[p], u1[p], u2[p], u3[p]] = kernel_1d([row[0][p], row[1][p], row[2][p]]);
            }
        }
    }
    u
}

/// How one image's tiles of `SIDE` × `SIDE` output pixels are laid out (2 here, 4 in
/// [`super::winograd_f4`]): `rows` × `columns` tiles, each row of tiles `pitch` = `columns` + 1
/// long. The spare tile at the end of every row is where the transforms' shifted reads (column
/// tx + 1) land, so each transform is one loop over all `rows · pitch` tiles, long enough to
/// vectorise; the spare tiles' values are never used.
#[derive(Clone, Copy)]
pub(super) struct TileGrid<const SIDE: usize> {
    pub(super) rows: usize,
    pub(super) columns: usize,
    pub(super) pitch: usize,
}

/// F(2×2, 3×3)'s tiles.
type Tiles = TileGrid<2>;

/// The multiple of tiles the products are rounded up to. Natively 16, the f32 lanes of gemm's
/// widest vector (AVX-512; AVX2 has 8): gemm copies (packs) the tile-side operand of a product
/// whose length is not such a multiple before it multiplies. In the browser 8, the columns of a
/// block of the simd128 kernel (`simd128_product`), which multiplies any length in place:
/// 16 would add 60 % to the products at 7 × 7 (20 tiles) and 14 % at 14 × 14 (56).
const PRODUCT_COLUMNS: usize = if SIMD128_KERNEL { 8 } else { 16 };

/// Whether the products run on the browser's simd128 kernel (`conv_ops` picks it there), which
/// multiplies any number of columns in place; natively they run on gemm.
const SIMD128_KERNEL: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

impl<const SIDE: usize> TileGrid<SIDE> {
    pub(super) fn new(height: usize, width: usize) -> Self {
        let (rows, columns) = (height.div_ceil(SIDE), width.div_ceil(SIDE));
        TileGrid {
            rows,
            columns,
            pitch: columns + 1,
        }
    }

    /// Tiles that the transforms write and read, spare ones included.
    pub(super) fn len(self) -> usize {
        self.rows * self.pitch
    }

    /// Tiles in the products: [`Self::len`] rounded up to a multiple of [`PRODUCT_COLUMNS`]; the
    /// extra tiles' values are whatever the scratch held, and never used.
    pub(super) fn product_len(self) -> usize {
        self.len().next_multiple_of(PRODUCT_COLUMNS)
    }

    /// Whether each row of tiles is whole vectors of four tiles (`columns` a multiple of 4: 7 × 7
    /// by F(2×2, 3×3)), so that the products can take the real tiles alone ([`RealTiles`]); a row
    /// of 7 would end in three single columns.
    fn rows_are_whole_vectors(self) -> bool {
        self.columns.is_multiple_of(4)
    }

    /// Where the products take the real tiles alone: in the browser, where
    /// [`Self::rows_are_whole_vectors`] (a third fewer columns at 7 × 7: 16 tiles, not 24).
    /// Natively the products take all [`Self::product_len`] (gemm's fastest lengths).
    pub(super) fn real_tiles(self) -> Option<RealTiles> {
        (SIMD128_KERNEL && self.rows_are_whole_vectors()).then_some(RealTiles {
            rows: self.rows,
            columns: self.columns,
            pitch: self.pitch,
        })
    }

    /// The tiles that the browser's products compute, before any rounding to its kernel's width:
    /// the real ones where [`Self::rows_are_whole_vectors`], otherwise all [`Self::len`].
    pub(super) fn computed_tiles(self) -> usize {
        match self.rows_are_whole_vectors() {
            true => self.rows * self.columns,
            false => self.len(),
        }
    }

    /// Values in one row phase of an input transform's plane (the padded input's rows y with the
    /// same y mod `SIDE`): `rows + 1` rows of `pitch`.
    pub(super) fn phase_len(self) -> usize {
        (self.rows + 1) * self.pitch
    }

    /// Values in one of the input transform's planes: a row phase for each padded row modulo
    /// `SIDE`, and one more for the last shifted read.
    pub(super) fn plane_len(self) -> usize {
        SIDE * self.phase_len() + 1
    }
}

/// The real tiles of a grid whose tile rows are whole vectors of four ([`TileGrid::real_tiles`]):
/// `rows` runs of `columns` tiles, `pitch` apart. A row of V is compacted before its product (each
/// tile row's real tiles moved to ty·`columns`, so the product runs over `rows · columns`
/// contiguous tiles), and a row of M expanded after it, back to where the output transform reads.
#[derive(Clone, Copy)]
pub(super) struct RealTiles {
    rows: usize,
    columns: usize,
    pitch: usize,
}

impl RealTiles {
    /// Tiles in the product.
    fn len(self) -> usize {
        self.rows * self.columns
    }

    /// Moves each tile row's real tiles to ty·`columns`, four at a time (front to back: nothing
    /// is overwritten before it is moved).
    fn compact(self, row: &mut [f32]) {
        assert!(row.len() >= self.rows * self.pitch, "a row of all the tiles");
        let row = row.as_mut_ptr();
        for ty in 1..self.rows {
            for tx in (0..self.columns).step_by(4) {
                // SAFETY: both fours lie inside the row (asserted above; tx + 4 ≤ columns <
                // pitch), and `ptr::copy` lets them overlap.
                unsafe { std::ptr::copy(row.add(ty * self.pitch + tx), row.add(ty * self.columns + tx), 4) };
            }
        }
    }

    /// [`Self::compact`] undone (back to front).
    fn expand(self, row: &mut [f32]) {
        assert!(row.len() >= self.rows * self.pitch, "a row of all the tiles");
        let row = row.as_mut_ptr();
        for ty in (1..self.rows).rev() {
            for tx in (0..self.columns).step_by(4).rev() {
                // SAFETY: as in `compact`.
                unsafe { std::ptr::copy(row.add(ty * self.columns + tx), row.add(ty * self.pitch + tx), 4) };
            }
        }
    }
}

impl Tiles {
    /// The work space of one channel's transforms.
    fn work_len(self) -> usize {
        6 * self.plane_len()
    }
}

/// The scratch [`conv_image`] needs: V `[16, c_in, tiles]`, M `[16, c_out, tiles]` and one
/// channel's work space.
pub(super) fn scratch_len(c_in: usize, c_out: usize, height: usize, width: usize) -> usize {
    let tiles = Tiles::new(height, width);
    16 * (c_in + c_out) * tiles.product_len() + tiles.work_len()
}

/// One channel's input transform: `v` (`[16, stride]`, this channel's column block) at tile
/// t = ty·pitch + tx gets Bᵀ d B of the 4×4 patch whose top-left pixel is (2·ty − 1, 2·tx − 1),
/// zero outside the image.
///
/// The padded input (one zero row and column before the image, zeros after it) is split by the
/// parity of its rows and columns: `even[p][j][i]` holds padded pixel (2·j + p, 2·i) and `odd`
/// pixel (2·j + p, 2·i + 1). A patch's four columns are then even[i], odd[i], even[i + 1],
/// odd[i + 1] of its rows, so the transform along x is one loop over whole planes, and its
/// four rows are rows j and j + 1 of both parities, so the transform along y is one loop over all
/// tiles.
#[inline(always)]
fn transform_channel(channel: &[f32], (height, width): (usize, usize), v: &mut [f32], stride: usize, work: &mut [f32]) {
    let tiles = Tiles::new(height, width);
    let (plane, pitch, n) = (tiles.plane_len(), tiles.pitch, tiles.len());
    let (even, rest) = work.split_at_mut(plane);
    let (odd, rest) = rest.split_at_mut(plane);
    even.fill(0.0);
    odd.fill(0.0);
    for (y, row) in channel.chunks_exact(width).enumerate() {
        // Padded row y + 1, padded column x + 1.
        let padded_row = y + 1;
        let (p, j) = (padded_row % 2, padded_row / 2);
        let first = p * tiles.phase_len() + j * pitch;
        let (even_row, odd_row) = (&mut even[first..first + pitch], &mut odd[first..first + pitch]);
        // Pixel pairs (2·i, 2·i + 1) go to odd[i] and even[i + 1] (loads that vectorise).
        let (pairs, last) = row.as_chunks::<2>();
        for ((o, e), &[a, b]) in odd_row.iter_mut().zip(&mut even_row[1..]).zip(pairs) {
            (*o, *e) = (a, b);
        }
        if let [a] = last {
            odd_row[pairs.len()] = *a;
        }
    }
    // Along x: r_b at every position of both parities' planes.
    let [r0, r1, r2, r3] = strided_mut::<4>(rest, 0, plane, plane - 1);
    for q in 0..plane - 1 {
        [r0[q], r1[q], r2[q], r3[q]] = input_1d([even[q], odd[q], even[q + 1], odd[q + 1]]);
    }
    // Along y: tile row ty reads padded rows 2·ty, 2·ty + 1 (j = ty) and 2·ty + 2, 2·ty + 3
    // (j = ty + 1), even parity first.
    let odd_rows = tiles.phase_len();
    for (b, r) in [&*r0, &*r1, &*r2, &*r3].into_iter().enumerate() {
        let (d0, d1) = (&r[..n], &r[odd_rows..odd_rows + n]);
        let (d2, d3) = (&r[pitch..pitch + n], &r[odd_rows + pitch..odd_rows + pitch + n]);
        let [v0, v1, v2, v3] = strided_mut::<4>(v, b * stride, 4 * stride, n);
        for t in 0..n {
            [v0[t], v1[t], v2[t], v3[t]] = input_1d([d0[t], d1[t], d2[t], d3[t]]);
        }
    }
}

/// One output channel's inverse transform: Aᵀ M A of each tile's 16 values in `m` (`[16,
/// stride]`, this channel's column block) added onto the 2×2 output block the tile covers; the
/// transforms are loops over all tiles, then each block's pixels are added to the output.
#[inline(always)]
fn add_output_channel(
    m: &[f32],
    stride: usize,
    (height, width): (usize, usize),
    channel: &mut [f32],
    work: &mut [f32],
) {
    let tiles = Tiles::new(height, width);
    let n = tiles.len();
    let at = |xi: usize| &m[xi * stride..xi * stride + n];
    let (reduced, blocks) = work.split_at_mut(8 * n);
    // Aᵀ M: reduced[i·4 + b] over the tiles, column b's four values reduced to two (i = 0, 1).
    for b in 0..4 {
        let (m0, m1, m2, m3) = (at(b), at(4 + b), at(8 + b), at(12 + b));
        let (s0, s1) = reduced.split_at_mut(4 * n);
        let (s0, s1) = (&mut s0[b * n..(b + 1) * n], &mut s1[b * n..(b + 1) * n]);
        for t in 0..n {
            [s0[t], s1[t]] = output_1d([m0[t], m1[t], m2[t], m3[t]]);
        }
    }
    let (left, right) = blocks.split_at_mut(n);
    let right = &mut right[..n];
    for i in 0..2 {
        // (Aᵀ M) A: row i of every block, as its left and right pixel.
        let s = |b: usize| &reduced[(i * 4 + b) * n..(i * 4 + b + 1) * n];
        let (s0, s1, s2, s3) = (s(0), s(1), s(2), s(3));
        for t in 0..n {
            [left[t], right[t]] = output_1d([s0[t], s1[t], s2[t], s3[t]]);
        }
        for (y, row) in channel.chunks_exact_mut(width).enumerate().skip(i).step_by(2) {
            let first = y / 2 * tiles.pitch;
            let (left, right) = (
                &left[first..first + tiles.columns],
                &right[first..first + tiles.columns],
            );
            // Pixel pairs (2·tx, 2·tx + 1) get the block's left and right pixel (stores that
            // vectorise); an odd width's last pixel only its left one.
            let (pairs, last) = row.as_chunks_mut::<2>();
            for ([a, b], (&l, &r)) in pairs.iter_mut().zip(left.iter().zip(right)) {
                *a += l;
                *b += r;
            }
            if let [a] = last {
                *a += left[tiles.columns - 1];
            }
        }
    }
}

/// `N` equal-length slices of `out`, at `first + k·step` for k = 0, 1, …, N − 1.
#[inline(always)]
pub(super) fn strided_mut<const N: usize>(out: &mut [f32], first: usize, step: usize, len: usize) -> [&mut [f32]; N] {
    let mut rest = &mut out[first..];
    std::array::from_fn(|_| {
        let taken = std::mem::take(&mut rest);
        let (head, tail) = taken.split_at_mut(step.min(taken.len()));
        rest = tail;
        &mut head[..len]
    })
}

/// Calls `$any($args)` compiled for the widest vectors the processor has: on x86-64 through a
/// wrapper with AVX-512 or AVX2 enabled, picked at run time ([`super::cpu_vectors`]), so the
/// `#[inline(always)]` loops inside vectorise for it.
macro_rules! with_widest_vectors {
    ($any:ident($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use super::cpu_vectors::{X86Vectors, x86_vectors};
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                $any($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $any($($arg),*)
            }
            // SAFETY: each is called only where the processor has its features.
            match x86_vectors() {
                X86Vectors::Avx512 => return unsafe { avx512($($arg),*) },
                X86Vectors::Avx2 => return unsafe { avx2($($arg),*) },
                X86Vectors::Sse => {}
            }
        }
        $any($($arg),*)
    }};
}

/// One image: the 3×3 convolution (zero padding 1) of `input` `[c_in, h, w]` added to `output`
/// `[c_out, h, w]` (which holds the bias), with the weights from [`transformed_weights`].
pub(super) fn conv_image(input: &[f32], u: &[f32], dims: Dims, output: &mut [f32]) {
    let (c_in, c_out, height, width) = dims;
    with_scratch(
        scratch_len(c_in, c_out, height, width),
        |scratch| with_widest_vectors!(conv_image_any(input: &[f32], u: &[f32], dims: Dims, output: &mut [f32], scratch: &mut [f32])),
    )
}

/// One image's share of ∂L/∂U (`[16, c_out, c_in]`, the gradient with respect to the transformed
/// weights), added to `sum`, given the image's `input` `[c_in, h, w]` and output gradient `grad`
/// `[c_out, h, w]`: as M_ξ = U_ξ V_ξ, ∂L/∂U_ξ = ∂L/∂M_ξ · V_ξᵀ, 16 products over the tiles with
/// ∂L/∂M = A (∂L/∂Y) Aᵀ per tile ([`gradient_transform_channel`]). [`weight_gradient`] turns the
/// sum over the images into ∂L/∂w.
pub(super) fn transformed_weight_gradient_image(input: &[f32], grad: &[f32], dims: Dims, sum: &mut [f32]) {
    let (c_in, c_out, height, width) = dims;
    with_scratch(scratch_len(c_in, c_out, height, width), |scratch| {
        with_widest_vectors!(transformed_weight_gradient_any(
            input: &[f32],
            grad: &[f32],
            dims: Dims,
            sum: &mut [f32],
            scratch: &mut [f32]
        ))
    })
}

/// [`transformed_weight_gradient_image`] for whatever vectors the caller's target features allow.
#[inline(always)]
fn transformed_weight_gradient_any(
    input: &[f32],
    grad: &[f32],
    (c_in, c_out, height, width): Dims,
    sum: &mut [f32],
    scratch: &mut [f32],
) {
    let (tiles, pixels) = (Tiles::new(height, width).len(), height * width);
    let (v, rest) = transformed_input(input, (c_in, height, width), tiles, scratch);
    let (dm, work) = rest.split_at_mut(16 * c_out * tiles);
    for (co, channel) in grad.chunks_exact(pixels).enumerate() {
        gradient_transform_channel(channel, (height, width), &mut dm[co * tiles..], c_out * tiles, work);
    }
    for xi in 0..16 {
        // ∂U_ξ [c_out, c_in] += ∂M_ξ [c_out, tiles] · V_ξᵀ [tiles, c_in]; the spare tiles' ∂M is 0.
        // SAFETY: ∂U_ξ is c_out·c_in values at ξ·c_out·c_in inside the 16 blocks of `sum`; ∂M_ξ
        // c_out·tiles at ξ·c_out·tiles and V_ξ c_in·tiles at ξ·c_in·tiles, inside their buffers.
        unsafe {
            add_product(
                (c_out, c_in, tiles),
                (sum.as_mut_ptr().add(xi * c_out * c_in), c_in as isize, 1),
                (dm.as_ptr().add(xi * c_out * tiles), tiles as isize, 1),
                (v.as_ptr().add(xi * c_in * tiles), 1, tiles as isize),
            )
        }
    }
}

/// The adjoint of [`add_output_channel`] for one output channel's gradient `grad` (`[h, w]`):
/// `dm` (`[16, stride]`, this channel's column block) at tile t gets A (∂Y) Aᵀ of the tile's 2×2
/// gradient block (zero past the image), ξ = 4·a + b; zero at the spare tiles. The block's
/// columns split into `left` and `right` planes by the parity of their rows, then both 1-D
/// adjoints run over all tiles at once.
#[inline(always)]
fn gradient_transform_channel(
    grad: &[f32],
    (height, width): (usize, usize),
    dm: &mut [f32],
    stride: usize,
    work: &mut [f32],
) {
    let tiles = Tiles::new(height, width);
    let (n, pitch) = (tiles.len(), tiles.pitch);
    // left[i][t], right[i][t]: the block's pixel (2·ty + i, 2·tx) and (2·ty + i, 2·tx + 1).
    let [left0, right0, left1, right1] = strided_mut::<4>(work, 0, n, n);
    for plane in [&mut *left0, &mut *right0, &mut *left1, &mut *right1] {
        plane.fill(0.0);
    }
    for (y, row) in grad.chunks_exact(width).enumerate() {
        let first = y / 2 * pitch;
        let (left, right) = if y % 2 == 0 {
            (&mut *left0, &mut *right0)
        } else {
            (&mut *left1, &mut *right1)
        };
        let (left, right) = (
            &mut left[first..first + tiles.columns],
            &mut right[first..first + tiles.columns],
        );
        let (pairs, last) = row.as_chunks::<2>();
        for ((l, r), &[a, b]) in left.iter_mut().zip(right.iter_mut()).zip(pairs) {
            (*l, *r) = (a, b);
        }
        if let [a] = last {
            left[pairs.len()] = *a;
        }
    }
    for b in 0..4 {
        let [d0, d1, d2, d3] = strided_mut::<4>(dm, b * stride, 4 * stride, n);
        for t in 0..n {
            // Along x, column b of A (∂Y)ᵀ for both rows; then along y, the four rows a.
            let [c0, c1] = [(left0[t], right0[t]), (left1[t], right1[t])].map(|(l, r)| output_adjoint([l, r])[b]);
            [d0[t], d1[t], d2[t], d3[t]] = output_adjoint([c0, c1]);
        }
    }
}

/// ∂L/∂w `[c_out, c_in, 3, 3]` from ∂L/∂U `[16, c_out, c_in]`: as U = G g Gᵀ, ∂L/∂g = Gᵀ (∂L/∂U) G
/// for every channel pair.
pub(super) fn weight_gradient(du: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    let pairs = c_out * c_in;
    let mut weight = vec![0.0f32; 9 * pairs];
    for (pair, g) in weight.chunks_exact_mut(9).enumerate() {
        // Gᵀ along b for each row a, then along a for each of the three columns.
        let rows: [[f32; 3]; 4] =
            std::array::from_fn(|a| kernel_adjoint(std::array::from_fn(|b| du[(4 * a + b) * pairs + pair])));
        for x in 0..3 {
            let column = kernel_adjoint([rows[0][x], rows[1][x], rows[2][x], rows[3][x]]);
            for (y, &value) in column.iter().enumerate() {
                g[3 * y + x] = value;
            }
        }
    }
    weight
}

/// V `[16, c_in, tiles]` of `input` `[c_in, h, w]` in the front of `scratch` (channel ci's values
/// for position ξ at (ξ·c_in + ci)·tiles, `tiles` ≥ [`Tiles::len`]), and the rest of the scratch
/// (which must hold M and [`Tiles::work_len`] values after V).
#[inline(always)]
fn transformed_input<'a>(
    input: &[f32],
    (c_in, height, width): (usize, usize, usize),
    tiles: usize,
    scratch: &'a mut [f32],
) -> (&'a mut [f32], &'a mut [f32]) {
    let (v, rest) = scratch.split_at_mut(16 * c_in * tiles);
    let work_len = Tiles::new(height, width).work_len();
    let work_start = rest.len() - work_len;
    let work = &mut rest[work_start..];
    for (ci, channel) in input.chunks_exact(height * width).enumerate() {
        transform_channel(channel, (height, width), &mut v[ci * tiles..], c_in * tiles, work);
    }
    (v, rest)
}

/// M_ξ `[c_out, tiles]` = U_ξ `[c_out, c_in]` · V_ξ `[c_in, tiles]` for every position ξ of the
/// transformed patch (16 here, 36 in [`super::winograd_f4`]): `u`, `v` and `m` hold one such block
/// per position, one after another, each row `tiles` long. With `real` the products take the real
/// tiles alone (V's rows are compacted in place first, and left so).
pub(super) fn transformed_products(
    (c_out, c_in, tiles): (usize, usize, usize),
    real: Option<RealTiles>,
    u: &[f32],
    v: &mut [f32],
    m: &mut [f32],
) {
    let positions = u.len() / (c_out * c_in);
    let (v, m) = (&mut v[..positions * c_in * tiles], &mut m[..positions * c_out * tiles]);
    if let Some(real) = real {
        v.chunks_exact_mut(tiles).for_each(|row| real.compact(row));
    }
    let n = real.map_or(tiles, RealTiles::len);
    for xi in 0..positions {
        // SAFETY: U_ξ is c_out·c_in values at ξ·c_out·c_in, V_ξ c_in·tiles at ξ·c_in·tiles and
        // M_ξ c_out·tiles at ξ·c_out·tiles, each inside its slice (cut to that length above), and
        // n ≤ tiles.
        unsafe {
            write_product(
                (c_out, n, c_in),
                (m.as_mut_ptr().add(xi * c_out * tiles), tiles as isize, 1),
                (u.as_ptr().add(xi * c_out * c_in), c_in as isize, 1),
                (v.as_ptr().add(xi * c_in * tiles), tiles as isize, 1),
            )
        }
    }
    if let Some(real) = real {
        m.chunks_exact_mut(tiles).for_each(|row| real.expand(row));
    }
}

/// (c_in, c_out, height, width) of a convolution.
type Dims = (usize, usize, usize, usize);

/// [`conv_image`] for whatever vectors the caller's target features allow, in `scratch`
/// ([`scratch_len`] values).
#[inline(always)]
fn conv_image_any(
    input: &[f32],
    u: &[f32],
    (c_in, c_out, height, width): Dims,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let (grid, pixels) = (Tiles::new(height, width), height * width);
    let tiles = grid.product_len();
    let (v, rest) = transformed_input(input, (c_in, height, width), tiles, scratch);
    let (m, work) = rest.split_at_mut(16 * c_out * tiles);
    transformed_products((c_out, c_in, tiles), grid.real_tiles(), u, v, m);
    for (co, channel) in output.chunks_exact_mut(pixels).enumerate() {
        add_output_channel(&m[co * tiles..], c_out * tiles, (height, width), channel, work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compacting a row of tiles puts each tile row's real tiles one after another at the front
    /// (tile (ty, tx) at ty·columns + tx), and expanding puts them back where they were, at
    /// ty·pitch + tx: 7 × 7 by F(2×2, 3×3) (4 rows of 4 tiles, pitch 5) and a grid of 3 rows of 8.
    #[test]
    fn real_tiles_compact_and_expand() {
        for (rows, columns, pitch) in [(4, 4, 5), (3, 8, 9)] {
            let real = RealTiles { rows, columns, pitch };
            let tile = |ty: usize, tx: usize| (100 * ty + tx) as f32;
            let mut row: Vec<f32> = (0..rows * pitch + 3)
                .map(|t| {
                    if t % pitch < columns {
                        tile(t / pitch, t % pitch)
                    } else {
                        -1.0
                    }
                })
                .collect();
            let before = row.clone();
            real.compact(&mut row);
            let want: Vec<f32> = (0..rows * columns).map(|t| tile(t / columns, t % columns)).collect();
            assert_eq!(row[..real.len()], want, "{rows} rows of {columns}, compacted");
            real.expand(&mut row);
            for (t, (&got, &was)) in row.iter().zip(&before).enumerate().take(rows * pitch) {
                if t % pitch < columns {
                    assert_eq!(got, was, "{rows} rows of {columns}, tile {t} expanded");
                }
            }
        }
    }

    /// Images and kernels of small integers, where every sum is exact in f32: the convolution
    /// equals the correlation written out, at odd and even sizes, one row and one column.
    #[test]
    fn the_convolution_equals_the_correlation_exactly() {
        for (c_in, c_out, height, width) in [(2, 3, 5, 3), (1, 1, 2, 2), (3, 2, 4, 6), (2, 2, 1, 5), (1, 2, 7, 1)] {
            let input: Vec<f32> = (0..c_in * height * width)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
            let mut output = vec![1.0f32; c_out * height * width];
            conv_image(
                &input,
                &transformed_weights(&weight, c_in, c_out),
                (c_in, c_out, height, width),
                &mut output,
            );
            for o in 0..c_out {
                for y in 0..height {
                    for x in 0..width {
                        let mut direct = 1.0f32;
                        for i in 0..c_in {
                            for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                                let (yy, xx) = ((y + ky).wrapping_sub(1), (x + kx).wrapping_sub(1));
                                if yy < height && xx < width {
                                    direct += weight[((o * c_in + i) * 3 + ky) * 3 + kx]
                                        * input[(i * height + yy) * width + xx];
                                }
                            }
                        }
                        let got = output[(o * height + y) * width + x];
                        assert_eq!(got, direct, "channel {o}, pixel ({y}, {x}) of {height}×{width}");
                    }
                }
            }
        }
    }

    /// The weight gradient, on integers where every sum is exact: equal to
    /// ∂L/∂w[o, i, ky, kx] = Σ_{y, x} grad[o, y, x] · input[i, y + ky − 1, x + kx − 1].
    #[test]
    fn the_weight_gradient_equals_the_correlation_of_input_and_gradient_exactly() {
        for (c_in, c_out, height, width) in [(2, 3, 5, 3), (1, 1, 2, 2), (3, 2, 4, 6), (2, 2, 1, 5), (1, 2, 7, 1)] {
            let input: Vec<f32> = (0..c_in * height * width)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let grad: Vec<f32> = (0..c_out * height * width)
                .map(|i| ((i * 5) % 9) as f32 - 4.0)
                .collect();
            let mut du = vec![0.0f32; 16 * c_out * c_in];
            transformed_weight_gradient_image(&input, &grad, (c_in, c_out, height, width), &mut du);
            let dw = weight_gradient(&du, c_in, c_out);
            for o in 0..c_out {
                for i in 0..c_in {
                    for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                        let mut direct = 0.0f32;
                        for y in 0..height {
                            for x in 0..width {
                                let (yy, xx) = ((y + ky).wrapping_sub(1), (x + kx).wrapping_sub(1));
                                if yy < height && xx < width {
                                    direct +=
                                        grad[(o * height + y) * width + x] * input[(i * height + yy) * width + xx];
                                }
                            }
                        }
                        let got = dw[((o * c_in + i) * 3 + ky) * 3 + kx];
                        assert_eq!(got, direct, "∂w[{o}, {i}, {ky}, {kx}] at {height}×{width}");
                    }
                }
            }
        }
    }
}
