//! Turning model tensors into pictures: [−1, 1] floats to grayscale bytes, grids and strips.
//! Shared by the CLI's PNG files and the browser's canvases.

/// A grayscale picture, row-major, one byte per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width · height` bytes.
    pub pixels: Vec<u8>,
}

/// Maps a model value in [−1, 1] to a byte, clamping outside values: round((x + 1) · 127.5).
pub fn unit_to_byte(x: f32) -> u8 {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

impl GrayImage {
    /// A blank (black) image.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    /// Lays out `images` (each `size × size` floats in [−1, 1], concatenated) in a grid of
    /// `columns` columns with `pad` pixels of border between and around them.
    pub fn grid(images: &[f32], size: usize, columns: usize, pad: usize) -> Self {
        let n = images.len() / (size * size);
        let columns = columns.clamp(1, n.max(1));
        let rows = n.div_ceil(columns);
        let mut out = Self::new(columns * (size + pad) + pad, rows * (size + pad) + pad);
        for (k, img) in images.chunks(size * size).enumerate() {
            let (x0, y0) = (pad + (k % columns) * (size + pad), pad + (k / columns) * (size + pad));
            for y in 0..size {
                for x in 0..size {
                    out.pixels[(y0 + y) * out.width + x0 + x] = unit_to_byte(img[y * size + x]);
                }
            }
        }
        out
    }

    /// Cuts image `k` back out of a picture laid out by [`Self::grid`] with the same `size`,
    /// `columns` and `pad`; a blank image when `k` is past the picture's last cell.
    pub fn grid_cell(&self, k: usize, size: usize, columns: usize, pad: usize) -> Self {
        let (x0, y0) = (pad + (k % columns) * (size + pad), pad + (k / columns) * (size + pad));
        let mut out = Self::new(size, size);
        if x0 + size <= self.width && y0 + size <= self.height {
            for y in 0..size {
                let row = (y0 + y) * self.width + x0;
                out.pixels[y * size..(y + 1) * size].copy_from_slice(&self.pixels[row..row + size]);
            }
        }
        out
    }

    /// Lays out pictures of one size in `columns` columns with `pad` pixels of border, as
    /// [`Self::grid`] does for floats (e.g. a chain figure: one row per sample, one column per step).
    pub fn arrange(parts: &[GrayImage], columns: usize, pad: usize) -> Self {
        let (w, h) = parts.first().map_or((0, 0), |p| (p.width, p.height));
        let columns = columns.clamp(1, parts.len().max(1));
        let rows = parts.len().div_ceil(columns);
        let mut out = Self::new(columns * (w + pad) + pad, rows * (h + pad) + pad);
        for (k, part) in parts.iter().enumerate() {
            let (x0, y0) = (pad + (k % columns) * (w + pad), pad + (k / columns) * (h + pad));
            for y in 0..h.min(part.height) {
                let src = &part.pixels[y * part.width..y * part.width + w.min(part.width)];
                let at = (y0 + y) * out.width + x0;
                out.pixels[at..at + src.len()].copy_from_slice(src);
            }
        }
        out
    }

    /// Stacks images vertically (e.g. the x_t row above the x̂_0 row of a chain strip).
    pub fn stack_vertical(parts: &[GrayImage]) -> Self {
        let width = parts.iter().map(|p| p.width).max().unwrap_or(0);
        let mut out = Self::new(width, parts.iter().map(|p| p.height).sum());
        let mut y0 = 0;
        for p in parts {
            for y in 0..p.height {
                let row = &p.pixels[y * p.width..(y + 1) * p.width];
                out.pixels[(y0 + y) * width..(y0 + y) * width + p.width].copy_from_slice(row);
            }
            y0 += p.height;
        }
        out
    }

    /// The image `factor` times larger, each pixel a `factor × factor` block (nearest neighbour:
    /// the pixels stay visible, as in the app's canvases).
    pub fn scaled(&self, factor: usize) -> Self {
        let factor = factor.max(1);
        let mut out = Self::new(self.width * factor, self.height * factor);
        for y in 0..out.height {
            for x in 0..out.width {
                out.pixels[y * out.width + x] = self.pixels[(y / factor) * self.width + x / factor];
            }
        }
        out
    }

    /// RGBA bytes (gray replicated, opaque), as a canvas `ImageData` wants them.
    pub fn to_rgba(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|&g| [g, g, g, 255]).collect()
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
        let g = GrayImage::grid(&imgs, 2, 2, 1);
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
        let s = GrayImage::stack_vertical(&[g.clone(), g]);
        assert_eq!((s.width, s.height), (7, 14));
        assert_eq!(s.to_rgba()[..8], [0, 0, 0, 255, 0, 0, 0, 255]);
    }

    #[test]
    fn grid_cells_come_back_out_and_arrange_lays_pictures_out() {
        // Five 2×2 images with distinct values, 2 columns, 1 px padding.
        let values = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let imgs: Vec<f32> = values.iter().flat_map(|&v| [v; 4]).collect();
        let g = GrayImage::grid(&imgs, 2, 2, 1);
        for (k, &v) in values.iter().enumerate() {
            assert_eq!(g.grid_cell(k, 2, 2, 1).pixels, vec![unit_to_byte(v); 4], "cell {k}");
        }
        // Past the last cell: blank.
        assert_eq!(g.grid_cell(7, 2, 2, 1).pixels, vec![0; 4]);
        // The cells arranged again in the same layout give the same picture back.
        let cells: Vec<_> = (0..5).map(|k| g.grid_cell(k, 2, 2, 1)).collect();
        assert_eq!(GrayImage::arrange(&cells, 2, 1), g);
        // One row of three: 3·(2+1)+1 = 10 wide, 4 high; the third cell starts at x = 7.
        let row = GrayImage::arrange(&cells[..3], 3, 1);
        assert_eq!((row.width, row.height), (10, 4));
        assert_eq!(row.pixels[10 + 7], unit_to_byte(0.0));
        assert_eq!(row.pixels[10 + 6], 0);
    }
}
