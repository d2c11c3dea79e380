//! Turning model tensors into pictures: [−1, 1] floats to grey or RGB bytes, grids and strips.
//! Shared by the CLI's PNG files and the browser's canvases.

/// A grey (1 channel) or colour (3 channels, RGB) picture, row-major, the channels of a pixel
/// side by side, one byte each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per pixel: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `width · height · channels` bytes.
    pub pixels: Vec<u8>,
}

/// The shape of a model's images: `channels` planes (1 grey, 3 RGB) of `size × size` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// Planes per image.
    pub channels: usize,
    /// Height and width.
    pub size: usize,
}

impl ImageShape {
    /// MNIST's 28 × 28 grey.
    pub const MNIST: ImageShape = ImageShape { channels: 1, size: 28 };

    /// Values per image.
    pub fn values(self) -> usize {
        self.channels * self.size * self.size
    }

    /// The tensor shape of `n` such images.
    pub fn batch(self, n: usize) -> [usize; 4] {
        [n, self.channels, self.size, self.size]
    }

    /// Lays out images of this shape in a grid ([`Picture::grid_channels`]).
    pub fn grid(self, images: &[f32], columns: usize, pad: usize) -> Picture {
        Picture::grid_channels(images, self.channels, self.size, columns, pad)
    }
}

/// `batch` images cut into at most `parts` contiguous runs as even as can be, the larger runs
/// first (no run is empty: fewer images than parts gives a run per image): the page's workers'
/// share of a request, the trainer's devices' share of a step.
pub fn split_batch(batch: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, batch.max(1));
    let (size, larger) = (batch / parts, batch % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + size + usize::from(i < larger);
            let run = start..end;
            start = end;
            run
        })
        .filter(|run| !run.is_empty())
        .collect()
}

/// Maps a model value in [−1, 1] to a byte, clamping outside values: round((x + 1) · 127.5).
pub fn unit_to_byte(x: f32) -> u8 {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

impl Picture {
    /// A blank (black) grey picture.
    pub fn new(width: usize, height: usize) -> Self {
        Self::blank(width, height, 1)
    }

    /// A blank (black) picture with `channels` bytes per pixel.
    pub fn blank(width: usize, height: usize, channels: usize) -> Self {
        Self {
            width,
            height,
            channels,
            pixels: vec![0; width * height * channels],
        }
    }

    /// Lays out grey `images` (each `size × size` floats in [−1, 1], concatenated) in a grid of
    /// `columns` columns with `pad` pixels of border between and around them.
    pub fn grid(images: &[f32], size: usize, columns: usize, pad: usize) -> Self {
        Self::grid_channels(images, 1, size, columns, pad)
    }

    /// [`Self::grid`] for images of `channels` planes each (the model's `[c, size, size]` layout,
    /// plane after plane), as a picture of `channels` bytes per pixel.
    pub fn grid_channels(images: &[f32], channels: usize, size: usize, columns: usize, pad: usize) -> Self {
        let plane = size * size;
        let n = images.len() / (channels * plane);
        let columns = columns.clamp(1, n.max(1));
        let rows = n.div_ceil(columns);
        let mut out = Self::blank(columns * (size + pad) + pad, rows * (size + pad) + pad, channels);
        for (k, img) in images.chunks(channels * plane).take(n).enumerate() {
            let (x0, y0) = (pad + (k % columns) * (size + pad), pad + (k / columns) * (size + pad));
            for y in 0..size {
                for x in 0..size {
                    for c in 0..channels {
                        out.pixels[((y0 + y) * out.width + x0 + x) * channels + c] =
                            unit_to_byte(img[c * plane + y * size + x]);
                    }
                }
            }
        }
        out
    }

    /// Copies the `w × h` block at (`x0`, `y0`) of `self` into `out` at (`x1`, `y1`).
    fn copy_block(&self, (x0, y0): (usize, usize), (w, h): (usize, usize), out: &mut Self, (x1, y1): (usize, usize)) {
        let c = self.channels;
        for y in 0..h {
            let src = ((y0 + y) * self.width + x0) * c;
            let dst = ((y1 + y) * out.width + x1) * c;
            out.pixels[dst..dst + w * c].copy_from_slice(&self.pixels[src..src + w * c]);
        }
    }

    /// Cuts image `k` back out of a picture laid out by [`Self::grid`] with the same `size`,
    /// `columns` and `pad`; a blank image when `k` is past the picture's last cell.
    pub fn grid_cell(&self, k: usize, size: usize, columns: usize, pad: usize) -> Self {
        let (x0, y0) = (pad + (k % columns) * (size + pad), pad + (k / columns) * (size + pad));
        let mut out = Self::blank(size, size, self.channels);
        if x0 + size <= self.width && y0 + size <= self.height {
            self.copy_block((x0, y0), (size, size), &mut out, (0, 0));
        }
        out
    }

    /// Lays out pictures of one size in `columns` columns with `pad` pixels of border, as
    /// [`Self::grid`] does for floats (e.g. a chain figure: one row per sample, one column per step).
    pub fn arrange(parts: &[Picture], columns: usize, pad: usize) -> Self {
        let (w, h, c) = parts.first().map_or((0, 0, 1), |p| (p.width, p.height, p.channels));
        let columns = columns.clamp(1, parts.len().max(1));
        let rows = parts.len().div_ceil(columns);
        let mut out = Self::blank(columns * (w + pad) + pad, rows * (h + pad) + pad, c);
        for (k, part) in parts.iter().enumerate() {
            let at = (pad + (k % columns) * (w + pad), pad + (k / columns) * (h + pad));
            part.copy_block((0, 0), (w.min(part.width), h.min(part.height)), &mut out, at);
        }
        out
    }

    /// Stacks pictures of one kind vertically (e.g. the x_t row above the x̂_0 row of a chain strip).
    pub fn stack_vertical(parts: &[Picture]) -> Self {
        let width = parts.iter().map(|p| p.width).max().unwrap_or(0);
        let channels = parts.first().map_or(1, |p| p.channels);
        let mut out = Self::blank(width, parts.iter().map(|p| p.height).sum(), channels);
        let mut y0 = 0;
        for p in parts {
            p.copy_block((0, 0), (p.width, p.height), &mut out, (0, y0));
            y0 += p.height;
        }
        out
    }

    /// The picture `factor` times larger, each pixel a `factor × factor` block (nearest neighbour:
    /// the pixels stay visible, as in the app's canvases).
    pub fn scaled(&self, factor: usize) -> Self {
        let factor = factor.max(1);
        let c = self.channels;
        let mut out = Self::blank(self.width * factor, self.height * factor, c);
        for y in 0..out.height {
            for x in 0..out.width {
                let src = ((y / factor) * self.width + x / factor) * c;
                let dst = (y * out.width + x) * c;
                out.pixels[dst..dst + c].copy_from_slice(&self.pixels[src..src + c]);
            }
        }
        out
    }

    /// RGBA bytes (grey replicated, opaque), as a canvas `ImageData` wants them.
    pub fn to_rgba(&self) -> Vec<u8> {
        match self.channels {
            3 => self.pixels.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
            _ => self.pixels.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_and_grid_layout() {
        assert_eq!(
            (
                unit_to_byte(-1.0),
                unit_to_byte(0.0),
                unit_to_byte(1.0),
                unit_to_byte(3.0)
            ),
            (0, 128, 255, 255)
        );
        // Three 2×2 images, 2 columns, 1 px padding → 7 × 7 picture.
        let imgs = [vec![1.0f32; 4], vec![-1.0; 4], vec![1.0; 4]].concat();
        let g = Picture::grid(&imgs, 2, 2, 1);
        assert_eq!((g.width, g.height), (7, 7));
        assert_eq!(g.pixels[8], 255); // (1, 1): first image
        assert_eq!(g.pixels[7 + 4], 0); // (4, 1): second image
        assert_eq!(g.pixels[4 * 7 + 1], 255); // (1, 4): third image
        assert_eq!(g.pixels[0], 0); // padding
        // ×2: pixel (1, 1) becomes the block (2..4, 2..4); the 7 × 7 picture 14 × 14.
        let big = g.scaled(2);
        assert_eq!((big.width, big.height), (14, 14));
        assert_eq!(
            [big.pixels[2 * 14 + 2], big.pixels[3 * 14 + 3], big.pixels[14 + 1]],
            [255, 255, 0]
        );
        let s = Picture::stack_vertical(&[g.clone(), g]);
        assert_eq!((s.width, s.height), (7, 14));
        assert_eq!(s.to_rgba()[..8], [0, 0, 0, 255, 0, 0, 0, 255]);
    }

    #[test]
    fn grid_cells_come_back_out_and_arrange_lays_pictures_out() {
        // Five 2×2 images with distinct values, 2 columns, 1 px padding.
        let values = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let imgs: Vec<f32> = values.iter().flat_map(|&v| [v; 4]).collect();
        let g = Picture::grid(&imgs, 2, 2, 1);
        for (k, &v) in values.iter().enumerate() {
            assert_eq!(g.grid_cell(k, 2, 2, 1).pixels, vec![unit_to_byte(v); 4], "cell {k}");
        }
        // Past the last cell: blank.
        assert_eq!(g.grid_cell(7, 2, 2, 1).pixels, vec![0; 4]);
        // The cells arranged again in the same layout give the same picture back.
        let cells: Vec<_> = (0..5).map(|k| g.grid_cell(k, 2, 2, 1)).collect();
        assert_eq!(Picture::arrange(&cells, 2, 1), g);
        // One row of three: 3·(2+1)+1 = 10 wide, 4 high; the third cell starts at x = 7.
        let row = Picture::arrange(&cells[..3], 3, 1);
        assert_eq!((row.width, row.height), (10, 4));
        assert_eq!(row.pixels[10 + 7], unit_to_byte(0.0));
        assert_eq!(row.pixels[10 + 6], 0);
    }

    #[test]
    fn colour_images_keep_their_channels_through_grids_and_strips() {
        // Two 1×1 RGB images, planes R, G, B: red (1, −1, −1) and blue (−1, −1, 1).
        let imgs = [1.0f32, -1.0, -1.0, -1.0, -1.0, 1.0];
        let g = Picture::grid_channels(&imgs, 3, 1, 2, 1);
        assert_eq!((g.width, g.height, g.channels), (5, 3, 3));
        // Pixel (1, 1) is red, (3, 1) blue, (2, 1) border.
        assert_eq!(g.pixels[(5 + 1) * 3..(5 + 2) * 3], [255, 0, 0]);
        assert_eq!(g.pixels[(5 + 3) * 3..(5 + 4) * 3], [0, 0, 255]);
        assert_eq!(g.pixels[(5 + 2) * 3..(5 + 3) * 3], [0, 0, 0]);
        assert_eq!(g.grid_cell(1, 1, 2, 1).pixels, [0, 0, 255]);
        assert_eq!(g.to_rgba()[(5 + 1) * 4..(5 + 2) * 4], [255, 0, 0, 255]);
        let big = g.scaled(2);
        assert_eq!(big.pixels[(2 * 10 + 2) * 3..(2 * 10 + 3) * 3], [255, 0, 0]);
        let s = Picture::stack_vertical(&[g.clone(), g.clone()]);
        assert_eq!((s.width, s.height, s.channels), (5, 6, 3));
        assert_eq!(s.pixels[((3 + 1) * 5 + 3) * 3..((3 + 1) * 5 + 4) * 3], [0, 0, 255]);
    }
}
