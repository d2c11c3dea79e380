//! The 3×3 "same" convolution's forward pass by Winograd's F(4×4, 3×3) (Lavin & Gray 2016), the
//! page's: each 4×4 block of output pixels from the 6×6 input patch around it, with 36
//! multiplications per (input, output) channel pair where F(2×2, 3×3) ([`super::winograd`]) takes
//! 64 for the same 16 pixels and the definition 144.
//!
//! With g a 3×3 kernel and d a 6×6 input patch, the 4×4 output block is
//! Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, with the interpolation points 0, ±1/2, ±2 and ∞:
//!
//! ```text
//!      ⎡1    0   −17/4    0    1  0⎤        ⎡  1      0      0  ⎤
//!      ⎢0   −2    −4     1/2   1  0⎥        ⎢−8/15  −4/15  −2/15⎥        ⎡1   1     1    1   1  0⎤
//! Bᵀ = ⎢0    2    −4    −1/2   1  0⎥    G = ⎢−8/15   4/15  −2/15⎥   Aᵀ = ⎢0  1/2  −1/2  2  −2  0⎥
//!      ⎢0  −1/2  −1/4     2    1  0⎥        ⎢ 1/30   1/15   2/15⎥        ⎢0  1/4   1/4  4   4  0⎥
//!      ⎢0   1/2  −1/4    −2    1  0⎥        ⎢ 1/30  −1/15   2/15⎥        ⎣0  1/8  −1/8  8  −8  1⎦
//!      ⎣0    1     0   −17/4   0  1⎦        ⎣  0      0      1  ⎦
//! ```
//!
//! (Lavin & Gray's matrices use the points 0, ±1, ±2; with ±1/2 in place of ±1 the rounding error
//! of an output in f32 is about 2.5 times smaller: measured on 6,400 outputs of 32-channel sums,
//! 4.6e-6 against 1.1e-5 relative to 1 + the output's size, in a simulation that rounds every
//! operation to f32; Barabasz et al. 2020, "Error analysis and improving the accuracy of Winograd
//! convolution for deep neural networks", study how the points set the error.)
//!
//! As in F(2×2, 3×3), summed over the input channels the elementwise product becomes matrix
//! products, here 36: M_ξ `[c_out, tiles]` = U_ξ `[c_out, c_in]` · V_ξ `[c_in, tiles]`.
//!
//! The browser runs only the forward pass, on four-float vectors where the products are most of a
//! step. At 28 × 28 this algorithm's products are 42 % smaller than F(2×2, 3×3)'s (49 tiles of 16
//! pixels against 196 of 4, each tile row with one spare tile), but its transforms cost about twice
//! theirs, and at 14 × 14 and 7 × 7 its products are not enough smaller to pay for that; so the
//! browser takes it where [`is_faster`] says (the U-Net's 28 × 28 convolutions: 1.1–1.3× faster
//! there in Chromium).
//! Natively, where training also needs the gradients, the convolution stays on F(2×2, 3×3). The
//! price is rounding: G's fifteenths and thirtieths and the larger coefficients of Aᵀ and Bᵀ (up to
//! 8) leave an output up to three times further from the exact one than the other convolutions:
//! within 3e-5 of the definition (relative to 1 + its size) at the U-Net's sizes, where they are
//! held to 1e-5 (tested here, and in the browser by `tests/web.rs`).

use super::conv_ops::with_scratch;
use super::winograd::{TileGrid, strided_mut, transformed_products};

/// The transforms' multipliers, which their loops receive as values: as literals they stay inside
/// the loops in the browser, where V8 rebuilds each vector constant at every iteration (see
/// `norm_silu`'s `Exp`).
#[derive(Clone, Copy)]
struct Multipliers {
    eighth: f32,
    quarter: f32,
    half: f32,
    two: f32,
    four: f32,
    four_and_a_quarter: f32,
    eight: f32,
}

impl Multipliers {
    #[inline(always)]
    fn new() -> Self {
        std::hint::black_box(Self {
            eighth: 0.125,
            quarter: 0.25,
            half: 0.5,
            two: 2.0,
            four: 4.0,
            four_and_a_quarter: 4.25,
            eight: 8.0,
        })
    }
}

/// The 1-D input transform Bᵀ d of six values.
#[inline(always)]
fn input_1d([d0, d1, d2, d3, d4, d5]: [f32; 6], k: Multipliers) -> [f32; 6] {
    let (even_half, odd_half) = (d4 - k.four * d2, k.two * d1 - k.half * d3);
    let (even_two, odd_two) = (d4 - k.quarter * d2, k.two * d3 - k.half * d1);
    [
        d0 - k.four_and_a_quarter * d2 + d4,
        even_half - odd_half,
        even_half + odd_half,
        even_two + odd_two,
        even_two - odd_two,
        d1 - k.four_and_a_quarter * d3 + d5,
    ]
}

/// The 1-D kernel transform G g of three values, in f64 (the weights are transformed once a call).
fn kernel_1d([g0, g1, g2]: [f64; 3]) -> [f64; 6] {
    [
        g0,
        -(8.0 * g0 + 4.0 * g1 + 2.0 * g2) / 15.0,
        -(8.0 * g0 - 4.0 * g1 + 2.0 * g2) / 15.0,
        (g0 + 2.0 * g1 + 4.0 * g2) / 30.0,
        (g0 - 2.0 * g1 + 4.0 * g2) / 30.0,
        g2,
    ]
}

/// The 1-D output transform Aᵀ m of six values.
#[inline(always)]
fn output_1d([m0, m1, m2, m3, m4, m5]: [f32; 6], k: Multipliers) -> [f32; 4] {
    let (sum_half, difference_half) = (m1 + m2, m1 - m2);
    let (sum_two, difference_two) = (m3 + m4, m3 - m4);
    [
        m0 + sum_half + sum_two,
        k.half * difference_half + k.two * difference_two,
        k.quarter * sum_half + k.four * sum_two,
        k.eighth * difference_half + k.eight * difference_two + m5,
    ]
}

/// The weights `[c_out, c_in, 3, 3]` transformed: `[36, c_out, c_in]`, position ξ = 6·a + b of
/// U = G g Gᵀ for every channel pair, so U_ξ is the left factor of product ξ as it is. Blocks of
/// channel pairs at a time, each position's values written as one run.
pub(super) fn transformed_weights(weight: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let pairs = c_out * c_in;
    let mut u = vec![0.0f32; 36 * pairs];
    let mut block = [[0.0f32; BLOCK]; 36];
    for first in (0..pairs).step_by(BLOCK) {
        let len = BLOCK.min(pairs - first);
        for (p, g) in weight[9 * first..9 * (first + len)].chunks_exact(9).enumerate() {
            let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
            // G g: each kernel column transformed along y; then each of its six rows along x.
            let columns: [[f64; 6]; 3] = std::array::from_fn(|x| kernel_1d([g[x], g[3 + x], g[6 + x]]));
            for a in 0..6 {
                let row = kernel_1d([columns[0][a], columns[1][a], columns[2][a]]);
                for (b, value) in row.into_iter().enumerate() {
                    block[6 * a + b][p] = value as f32;
                }
            }
        }
        for (xi, values) in block.iter().enumerate() {
            u[xi * pairs + first..xi * pairs + first + len].copy_from_slice(&values[..len]);
        }
    }
    u
}

/// F(4×4, 3×3)'s tiles ([`TileGrid`]).
type Tiles = TileGrid<4>;

impl Tiles {
    /// The work space of one channel's transforms: the input's four column phases and the six
    /// planes of its transform along x, or the output transform's 24 + 4 planes of tiles.
    fn work_len(self) -> usize {
        (10 * self.plane_len()).max(28 * self.len())
    }
}

/// The scratch [`conv_image`] needs: V `[36, c_in, tiles]`, M `[36, c_out, tiles]` and one
/// channel's work space.
fn scratch_len(c_in: usize, c_out: usize, height: usize, width: usize) -> usize {
    let tiles = Tiles::new(height, width);
    36 * (c_in + c_out) * tiles.product_len() + tiles.work_len()
}

/// Whether F(4×4, 3×3) is the faster of the two at this size: where its 36 products compute at
/// most five eighths of the columns of F(2×2, 3×3)'s 16 ([`TileGrid::computed_tiles`]), as its
/// transforms cost about twice theirs per image. So 28 × 28 (60 %) and 16 × 16 (56 %), but not
/// 14 × 14 (64 %: about 1.4× slower there in Chromium, its transforms outweighing what its
/// products save) or 7 × 7 (84 %); measured in Chromium on the U-Net's convolutions
/// (docs/performance.md).
pub(super) fn is_faster(height: usize, width: usize) -> bool {
    let (f4, f2) = (Tiles::new(height, width), TileGrid::<2>::new(height, width));
    8 * 36 * f4.computed_tiles() <= 5 * 16 * f2.computed_tiles()
}

/// One channel's input transform: `v` (`[36, stride]`, this channel's column block) at tile
/// t = ty·pitch + tx gets Bᵀ d B of the 6×6 patch whose top-left pixel is (4·ty − 1, 4·tx − 1),
/// zero outside the image.
///
/// The padded input (one zero row and column before the image, zeros after it) is split by its
/// rows and columns modulo 4: column phase k, row phase p, holds padded pixel (4·j + p, 4·i + k) at
/// p·phase_len + j·pitch + i. A patch's six columns are then phases 0–3 at i and phases 0, 1 at
/// i + 1, so the transform along x is one loop over whole planes; its six rows are row phases
/// 0–3 at j = ty and phases 0, 1 at j = ty + 1, so the transform along y is one loop over all tiles.
#[inline(always)]
fn transform_channel(channel: &[f32], (height, width): (usize, usize), v: &mut [f32], stride: usize, work: &mut [f32]) {
    let k = Multipliers::new();
    let tiles = Tiles::new(height, width);
    let (plane, phase, pitch, n) = (tiles.plane_len(), tiles.phase_len(), tiles.pitch, tiles.len());
    let (columns, along_x) = work.split_at_mut(4 * plane);
    columns.fill(0.0);
    {
        let [c0, c1, c2, c3] = strided_mut::<4>(columns, 0, plane, plane);
        for (y, row) in channel.chunks_exact(width).enumerate() {
            // Padded row y + 1; padded column x + 1: pixels 4·m, 4·m + 1 and 4·m + 2 are in
            // column phases 1, 2 and 3 at m, pixel 4·m + 3 in phase 0 at m + 1.
            let first = (y + 1) % 4 * phase + (y + 1) / 4 * pitch;
            let (c0, c1) = (&mut c0[first..first + pitch], &mut c1[first..first + pitch]);
            let (c2, c3) = (&mut c2[first..first + pitch], &mut c3[first..first + pitch]);
            let (quads, last) = row.as_chunks::<4>();
            for ((((&[a, b, c, d], p1), p2), p3), p0) in
                quads.iter().zip(&mut *c1).zip(&mut *c2).zip(&mut *c3).zip(&mut c0[1..])
            {
                (*p1, *p2, *p3, *p0) = (a, b, c, d);
            }
            let m = quads.len();
            for (&value, phase) in last.iter().zip([c1, c2, c3]) {
                phase[m] = value;
            }
        }
    }
    let [c0, c1, c2, c3] = [0, 1, 2, 3].map(|k| &columns[k * plane..(k + 1) * plane]);
    // Along x: x_b at every position of every row phase.
    let len = plane - 1;
    let [x0, x1, x2, x3, x4, x5] = strided_mut::<6>(along_x, 0, plane, len);
    for q in 0..len {
        [x0[q], x1[q], x2[q], x3[q], x4[q], x5[q]] = input_1d([c0[q], c1[q], c2[q], c3[q], c0[q + 1], c1[q + 1]], k);
    }
    // Along y: tile row ty reads padded rows 4·ty … 4·ty + 3 (row phases 0–3 at j = ty) and
    // 4·ty + 4, 4·ty + 5 (phases 0, 1 at j = ty + 1).
    let rows_of = [0, phase, 2 * phase, 3 * phase, pitch, phase + pitch];
    for (b, x) in [&*x0, &*x1, &*x2, &*x3, &*x4, &*x5].into_iter().enumerate() {
        let [d0, d1, d2, d3, d4, d5] = rows_of.map(|first| &x[first..first + n]);
        let [v0, v1, v2, v3, v4, v5] = strided_mut::<6>(v, b * stride, 6 * stride, n);
        for t in 0..n {
            [v0[t], v1[t], v2[t], v3[t], v4[t], v5[t]] = input_1d([d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]], k);
        }
    }
}

/// One output channel's inverse transform: Aᵀ M A of each tile's 36 values in `m` (`[36,
/// stride]`, this channel's column block) added onto the 4×4 output block the tile covers; the
/// transforms are loops over all tiles, then each block's pixels are added to the output.
#[inline(always)]
fn add_output_channel(
    m: &[f32],
    stride: usize,
    (height, width): (usize, usize),
    channel: &mut [f32],
    work: &mut [f32],
) {
    let k = Multipliers::new();
    let tiles = Tiles::new(height, width);
    let n = tiles.len();
    let at = |xi: usize| &m[xi * stride..xi * stride + n];
    let (reduced, blocks) = work.split_at_mut(24 * n);
    // Aᵀ M: reduced[i·6 + b] over the tiles, column b's six values reduced to four (i = 0 … 3).
    for b in 0..6 {
        let [m0, m1, m2, m3, m4, m5] = [0, 6, 12, 18, 24, 30].map(|a| at(a + b));
        let [s0, s1, s2, s3] = strided_mut::<4>(reduced, b * n, 6 * n, n);
        for t in 0..n {
            [s0[t], s1[t], s2[t], s3[t]] = output_1d([m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]], k);
        }
    }
    let [p0, p1, p2, p3] = strided_mut::<4>(blocks, 0, n, n);
    for i in 0..4 {
        // (Aᵀ M) A: row i of every block, as its four pixels.
        let [s0, s1, s2, s3, s4, s5] = [0, 1, 2, 3, 4, 5].map(|b| &reduced[(i * 6 + b) * n..(i * 6 + b + 1) * n]);
        for t in 0..n {
            [p0[t], p1[t], p2[t], p3[t]] = output_1d([s0[t], s1[t], s2[t], s3[t], s4[t], s5[t]], k);
        }
        for (y, row) in channel.chunks_exact_mut(width).enumerate().skip(i).step_by(4) {
            let first = y / 4 * tiles.pitch;
            let block = [&*p0, &*p1, &*p2, &*p3].map(|p| &p[first..first + tiles.columns]);
            // Pixels 4·tx … 4·tx + 3 get the block's four pixels of this row (stores that
            // vectorise); a width that is not a multiple of 4 ends in a part of a block.
            let (quads, last) = row.as_chunks_mut::<4>();
            for ((((q, &a), &b), &c), &d) in quads.iter_mut().zip(block[0]).zip(block[1]).zip(block[2]).zip(block[3]) {
                q[0] += a;
                q[1] += b;
                q[2] += c;
                q[3] += d;
            }
            for (pixel, part) in last.iter_mut().zip(block) {
                *pixel += part[tiles.columns - 1];
            }
        }
    }
}

/// One image: the 3×3 convolution (zero padding 1) of `input` `[c_in, h, w]` added to `output`
/// `[c_out, h, w]` (which holds the bias), with the weights from [`transformed_weights`].
pub(super) fn conv_image(
    input: &[f32],
    u: &[f32],
    (c_in, c_out, height, width): (usize, usize, usize, usize),
    output: &mut [f32],
) {
    let (grid, pixels) = (Tiles::new(height, width), height * width);
    let n = grid.product_len();
    with_scratch(scratch_len(c_in, c_out, height, width), |scratch| {
        let (v, rest) = scratch.split_at_mut(36 * c_in * n);
        let (m, work) = rest.split_at_mut(36 * c_out * n);
        for (ci, channel) in input.chunks_exact(pixels).enumerate() {
            transform_channel(channel, (height, width), &mut v[ci * n..], c_in * n, work);
        }
        transformed_products((c_out, c_in, n), grid.real_tiles(), u, v, m);
        for (co, channel) in output.chunks_exact_mut(pixels).enumerate() {
            add_output_channel(&m[co * n..], c_out * n, (height, width), channel, work);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::conv_ops::test_support::by_definition;
    use super::*;
    use crate::rng::NoiseRng;

    /// How far an output may be from the definition, relative to 1 + its size: 3e-5, where the
    /// other convolutions are held to 1e-5. F(4×4, 3×3)'s rounding is the algorithm's, not a
    /// fault: its products add transformed values a few times larger than the output they cancel
    /// down to (here up to 1.2e-5 at 96 channels in, seeds 7–9; most of it the products' f32 sums,
    /// by a simulation that rounds one stage at a time). A wrong transform or a misplaced tile is
    /// off by the output's own size.
    const TOLERANCE: f64 = 3e-5;

    /// F(4×4, 3×3) is taken at 28 × 28, 32 × 32 and 16 × 16, not at 14 × 14 or 7 × 7: its products
    /// compute 36 · 7 · 8 columns at 28 × 28 against F(2×2, 3×3)'s 16 · 14 · 15 (60 %), 36 · 4 · 4
    /// at 14 × 14 against 16 · 7 · 8 (64 %), 36 · 2 · 3 at 7 × 7 against 16 · 4 · 4 (84 %).
    #[test]
    fn it_is_taken_where_its_products_are_three_eighths_smaller() {
        assert!(is_faster(28, 28) && is_faster(32, 32) && is_faster(16, 16));
        assert!(!is_faster(14, 14) && !is_faster(7, 7));
    }

    /// The convolution of random images equals its definition in f64 within [`TOLERANCE`] (relative
    /// to 1 + its size), at the U-Net's sizes and channel counts and at sizes that leave every
    /// remainder of 4 in both directions, one row and one column included, with weights of
    /// standard deviation 1/√(9·c_in) (√3 times burn's initialisation: outputs of about unit size).
    #[test]
    fn the_convolution_equals_its_definition() {
        let mut rng = NoiseRng::new(7);
        let cases = [
            (32, 32, 28, 28),
            (96, 32, 28, 28),
            (64, 64, 14, 14),
            (128, 64, 14, 14),
            (128, 64, 7, 7),
            (3, 5, 9, 11),
            (2, 3, 5, 6),
            (1, 2, 1, 7),
            (2, 1, 8, 1),
            (4, 4, 4, 4),
            (3, 2, 2, 3),
        ];
        for (c_in, c_out, height, width) in cases {
            let input: Vec<f32> = rng.normal_vec(c_in * height * width);
            let scale = (9.0 * c_in as f32).sqrt().recip();
            let weight: Vec<f32> = rng.normal_vec(c_out * c_in * 9).iter().map(|w| w * scale).collect();
            let bias: Vec<f32> = rng.normal_vec(c_out);
            let mut output: Vec<f32> = bias
                .iter()
                .flat_map(|&b| std::iter::repeat_n(b, height * width))
                .collect();
            conv_image(
                &input,
                &transformed_weights(&weight, c_in, c_out),
                (c_in, c_out, height, width),
                &mut output,
            );
            let want = by_definition(&input, &weight, &bias, [1, c_in, height, width], c_out, 1);
            let worst = want
                .iter()
                .zip(&output)
                .map(|(e, &o)| (o as f64 - e).abs() / (1.0 + e.abs()))
                .fold(0.0, f64::max);
            assert!(
                worst <= TOLERANCE,
                "{c_in}→{c_out} channels, {height}×{width}: off the definition by {worst:e}"
            );
        }
    }
}
