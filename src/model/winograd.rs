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

use super::conv_ops::{with_scratch, write_product};

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
            let [u0, u1, u2, u3] = four_mut(&mut u, 4 * a * pairs + first, pairs, len);
            for p in 0..len {
                [u0[p], u1[p], u2[p], u3[p]] = kernel_1d([row[0][p], row[1][p], row[2][p]]);
            }
        }
    }
    u
}

/// How one image's tiles are laid out: `rows` × `columns` tiles of 2×2 output pixels, each row of
/// tiles `pitch` = `columns` + 1 long. The spare tile at the end of every row is where the
/// transforms' shifted reads (column tx + 1) land, so each transform is one loop over all
/// `rows · pitch` tiles, long enough to vectorise; the spare tiles' values are never used.
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    columns: usize,
    pitch: usize,
}

impl Tiles {
    fn new(height: usize, width: usize) -> Self {
        let (rows, columns) = (height.div_ceil(2), width.div_ceil(2));
        Tiles {
            rows,
            columns,
            pitch: columns + 1,
        }
    }

    /// Tiles that the transforms write and read, spare ones included.
    fn len(self) -> usize {
        self.rows * self.pitch
    }

    /// Tiles in the products: [`Self::len`] rounded up to a multiple of 16, the f32 lanes of
    /// gemm's widest vector (AVX-512; AVX2 and wasm's simd128 have 8 and 4). gemm copies (packs)
    /// the tile-side operand of a product whose length is not such a multiple before it
    /// multiplies; the extra tiles' values are whatever the scratch held, and never used.
    fn product_len(self) -> usize {
        self.len().next_multiple_of(16)
    }

    /// Values in one of the input transform's planes: `rows + 1` rows of `pitch` values for each
    /// parity of the padded input's rows, and one more for the last shifted read.
    fn plane_len(self) -> usize {
        2 * (self.rows + 1) * self.pitch + 1
    }

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
        let first = (p * (tiles.rows + 1) + j) * pitch;
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
    let [r0, r1, r2, r3] = four_mut(rest, 0, plane, plane - 1);
    for q in 0..plane - 1 {
        [r0[q], r1[q], r2[q], r3[q]] = input_1d([even[q], odd[q], even[q + 1], odd[q + 1]]);
    }
    // Along y: tile row ty reads padded rows 2·ty, 2·ty + 1 (j = ty) and 2·ty + 2, 2·ty + 3
    // (j = ty + 1), even parity first.
    let odd_rows = (tiles.rows + 1) * pitch;
    for (b, r) in [&*r0, &*r1, &*r2, &*r3].into_iter().enumerate() {
        let (d0, d1) = (&r[..n], &r[odd_rows..odd_rows + n]);
        let (d2, d3) = (&r[pitch..pitch + n], &r[odd_rows + pitch..odd_rows + pitch + n]);
        let [v0, v1, v2, v3] = four_mut(v, b * stride, 4 * stride, n);
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

/// Four equal-length output slices from `out` at offsets `first + k·step`.
#[inline(always)]
fn four_mut(out: &mut [f32], first: usize, step: usize, len: usize) -> [&mut [f32]; 4] {
    let (_, rest) = out.split_at_mut(first);
    let (s0, rest) = rest.split_at_mut(step);
    let (s1, rest) = rest.split_at_mut(step);
    let (s2, rest) = rest.split_at_mut(step);
    [&mut s0[..len], &mut s1[..len], &mut s2[..len], &mut rest[..len]]
}

/// One image: the 3×3 convolution (zero padding 1) of `input` `[c_in, h, w]` added to `output`
/// `[c_out, h, w]` (which holds the bias), with the weights from [`transformed_weights`].
///
/// The transforms are short loops across a row of tiles, compiled for the widest vectors the
/// processor has (picked at run time on x86-64, as for GroupNorm + SiLU).
pub(super) fn conv_image(input: &[f32], u: &[f32], dims: (usize, usize, usize, usize), output: &mut [f32]) {
    let (c_in, c_out, height, width) = dims;
    with_scratch(scratch_len(c_in, c_out, height, width), |scratch| {
        #[cfg(target_arch = "x86_64")]
        {
            use super::norm_silu::{X86Vectors, x86_vectors};
            /// [`conv_image_any`] with AVX-512.
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn avx512(input: &[f32], u: &[f32], dims: Dims, output: &mut [f32], scratch: &mut [f32]) {
                conv_image_any(input, u, dims, output, scratch)
            }
            /// [`conv_image_any`] with AVX2.
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(input: &[f32], u: &[f32], dims: Dims, output: &mut [f32], scratch: &mut [f32]) {
                conv_image_any(input, u, dims, output, scratch)
            }
            // SAFETY: each is called only where the processor has its features.
            match x86_vectors() {
                X86Vectors::Avx512 => return unsafe { avx512(input, u, dims, output, scratch) },
                X86Vectors::Avx2 => return unsafe { avx2(input, u, dims, output, scratch) },
                X86Vectors::Sse => {}
            }
        }
        conv_image_any(input, u, dims, output, scratch)
    })
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
    let (tiles, pixels) = (Tiles::new(height, width).product_len(), height * width);
    let (v, rest) = scratch.split_at_mut(16 * c_in * tiles);
    let (m, work) = rest.split_at_mut(16 * c_out * tiles);
    // V `[16, c_in, tiles]`: channel ci's values for position ξ at (ξ·c_in + ci)·tiles.
    for (ci, channel) in input.chunks_exact(pixels).enumerate() {
        transform_channel(channel, (height, width), &mut v[ci * tiles..], c_in * tiles, work);
    }
    for xi in 0..16 {
        // M_ξ [c_out, tiles] = U_ξ [c_out, c_in] · V_ξ [c_in, tiles]
        // SAFETY: U_ξ is c_out·c_in values at ξ·c_out·c_in, V_ξ c_in·tiles at ξ·c_in·tiles and
        // M_ξ c_out·tiles at ξ·c_out·tiles, each inside its buffer of 16 such blocks.
        unsafe {
            write_product(
                (c_out, tiles, c_in),
                (m.as_mut_ptr().add(xi * c_out * tiles), tiles as isize, 1),
                (u.as_ptr().add(xi * c_out * c_in), c_in as isize, 1),
                (v.as_ptr().add(xi * c_in * tiles), tiles as isize, 1),
            )
        }
    }
    for (co, channel) in output.chunks_exact_mut(pixels).enumerate() {
        add_output_channel(&m[co * tiles..], c_out * tiles, (height, width), channel, work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
