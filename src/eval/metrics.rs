//! Sample-quality statistics on the host: the Fréchet distance between two sets of feature
//! vectors (Heusel et al. 2017, the "FID" formula), the share of confidently classified images and
//! the entropy of the class histogram.

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

/// Mean vector and (unbiased, n − 1) covariance matrix of `rows`.
pub fn mean_and_covariance(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0.0; d];
    for row in rows {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n as f64;
        }
    }
    let centered: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| row.iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect();
    let denominator = (n.max(2) - 1) as f64;
    let cov = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| centered.iter().map(|c| c[i] * c[j]).sum::<f64>() / denominator)
                .collect()
        })
        .collect();
    (mean, cov)
}

/// Eigenvalues and eigenvectors (as columns of the returned matrix) of a symmetric matrix,
/// by cyclic Jacobi rotations.
pub fn symmetric_eigen(matrix: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = matrix.len();
    let mut a = matrix.to_vec();
    let mut v: Vec<Vec<f64>> = (0..d).map(|i| (0..d).map(|j| f64::from(i == j)).collect()).collect();
    let scale: f64 = a
        .iter()
        .flatten()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                if a[p][q].abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, algorithm 8.4.1).
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (head, tail) = a.split_at_mut(q);
                for (apk, aqk) in head[p].iter_mut().zip(tail[0].iter_mut()) {
                    let (x, y) = (*apk, *aqk);
                    *apk = c * x - s * y;
                    *aqk = s * x + c * y;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i][i]).collect(), v)
}

/// The square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues
/// are treated as 0).
fn sqrt_psd(matrix: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (values, vectors) = symmetric_eigen(matrix);
    let d = matrix.len();
    let roots: Vec<f64> = values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    (0..d)
        .map(|i| {
            (0..d)
                .map(|j| (0..d).map(|k| vectors[i][k] * roots[k] * vectors[j][k]).sum())
                .collect()
        })
        .collect()
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (n, m) = (a.len(), b.first().map_or(0, Vec::len));
    (0..n)
        .map(|i| {
            (0..m)
                .map(|j| a[i].iter().zip(b).map(|(x, row)| x * row[j]).sum())
                .collect()
        })
        .collect()
}

/// The Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂):
///
/// ```text
/// d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})
/// ```
///
/// with Tr (Σ₁ Σ₂)^{1/2} computed as Tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, a symmetric matrix with the
/// same eigenvalues as Σ₁ Σ₂.
pub fn frechet_distance(mean1: &[f64], cov1: &[Vec<f64>], mean2: &[f64], cov2: &[Vec<f64>]) -> f64 {
    let mean_term: f64 = mean1.iter().zip(mean2).map(|(a, b)| (a - b) * (a - b)).sum();
    let root1 = sqrt_psd(cov1);
    let middle = matmul(&matmul(&root1, cov2), &root1);
    let (values, _) = symmetric_eigen(&middle);
    let cross: f64 = values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let trace = |m: &[Vec<f64>]| (0..m.len()).map(|i| m[i][i]).sum::<f64>();
    mean_term + trace(cov1) + trace(cov2) - 2.0 * cross
}

/// The Fréchet distance between two sets of feature vectors (each fitted with a Gaussian).
pub fn frechet_distance_of(features1: &[Vec<f64>], features2: &[Vec<f64>]) -> f64 {
    let (m1, c1) = mean_and_covariance(features1);
    let (m2, c2) = mean_and_covariance(features2);
    frechet_distance(&m1, &c1, &m2, &c2)
}

/// Share of rows whose largest probability exceeds `threshold`.
pub fn confident_share(probs: &[Vec<f64>], threshold: f64) -> f64 {
    let confident = probs
        .iter()
        .filter(|p| p.iter().cloned().fold(f64::NEG_INFINITY, f64::max) > threshold)
        .count();
    confident as f64 / probs.len().max(1) as f64
}

/// Entropy in bits of the histogram of predicted classes (log₂ 10 ≈ 3.32 when every digit is
/// equally common, 0 when every image is the same digit).
pub fn class_entropy_bits(predictions: &[usize], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    for &p in predictions {
        counts[p] += 1;
    }
    let n = predictions.len().max(1) as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// For each query image, the Euclidean distance (in pixel units of [−1, 1]) to its nearest image
/// among `references`; images are flat, `dim` values each. The memorisation check compares these
/// for generated samples against the same distances for held-out images.
///
/// ‖q − r‖² = ‖q‖² + ‖r‖² − 2 q·r, with the dot products of a block of queries against every
/// reference as one matrix product (gemm, f32), the rest in f64; blocks run in parallel natively.
pub fn nearest_distances(queries: &[f32], references: &[f32], dim: usize) -> Vec<f64> {
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && references.len().is_multiple_of(dim));
    /// Queries per product: 256 × 60,000 dot products (61 MB) for Fashion-MNIST's training set.
    const BLOCK: usize = 256;
    let norm = |image: &[f32]| image.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
    let ref_norms: Vec<f64> = references.chunks(dim).map(norm).collect();
    let n_refs = ref_norms.len();
    let block_distances = |block: &[f32]| -> Vec<f64> {
        let rows = block.len() / dim;
        if n_refs == 0 {
            return vec![f64::INFINITY; rows];
        }
        let mut dots = vec![0.0f32; rows * n_refs]; // [rows, n_refs]
        // dots = block [rows × dim] · referencesᵀ [dim × n_refs].
        // SAFETY: every stride stays inside its slice: block is rows × dim, references n_refs × dim
        // (read transposed), dots rows × n_refs.
        unsafe {
            crate::kernels::write_product(
                (rows, n_refs, dim),
                (dots.as_mut_ptr(), n_refs as isize, 1),
                (block.as_ptr(), dim as isize, 1),
                (references.as_ptr(), 1, dim as isize),
            );
        }
        block
            .chunks(dim)
            .zip(dots.chunks(n_refs))
            .map(|(q, dots)| {
                let q_norm = norm(q);
                let best = dots
                    .iter()
                    .zip(&ref_norms)
                    .map(|(&dot, &r_norm)| q_norm + r_norm - 2.0 * dot as f64)
                    .fold(f64::INFINITY, f64::min);
                best.max(0.0).sqrt()
            })
            .collect()
    };
    #[cfg(feature = "native")]
    {
        use rayon::prelude::*;
        queries.par_chunks(BLOCK * dim).flat_map_iter(block_distances).collect()
    }
    #[cfg(not(feature = "native"))]
    queries.chunks(BLOCK * dim).flat_map(block_distances).collect()
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between order statistics
/// (NumPy's default, "linear").
pub fn quantile(values: &[f64], q: f64) -> f64 {
    assert!(!values.is_empty() && (0.0..=1.0).contains(&q));
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Share of `values` strictly below `threshold`.
pub fn share_below(values: &[f64], threshold: f64) -> f64 {
    values.iter().filter(|&&v| v < threshold).count() as f64 / values.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covariance_of_a_small_set_by_hand() {
        // x = (1, 2, 3), y = (2, 4, 7): means 2 and 13/3; var x = 1, var y = 6.3333…, cov = 2.5.
        let rows = vec![vec![1.0, 2.0], vec![2.0, 4.0], vec![3.0, 7.0]];
        let (m, c) = mean_and_covariance(&rows);
        assert!((m[0] - 2.0).abs() < 1e-12 && (m[1] - 13.0 / 3.0).abs() < 1e-12);
        assert!((c[0][0] - 1.0).abs() < 1e-12);
        assert!((c[1][1] - 19.0 / 3.0).abs() < 1e-12);
        assert!((c[0][1] - 2.5).abs() < 1e-12 && (c[1][0] - 2.5).abs() < 1e-12);
    }

    #[test]
    fn eigen_decomposition_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let (mut values, vectors) = symmetric_eigen(&[vec![2.0, 1.0], vec![1.0, 2.0]]);
        let unsorted = values.clone();
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-12 && (values[1] - 3.0).abs() < 1e-12);
        // A v = λ v for each column.
        for (k, lambda) in unsorted.iter().enumerate() {
            let (x, y) = (vectors[0][k], vectors[1][k]);
            assert!((2.0 * x + y - lambda * x).abs() < 1e-12 && (x + 2.0 * y - lambda * y).abs() < 1e-12);
        }
    }

    #[test]
    fn nearest_distances_match_the_definition_across_blocks() {
        // 600 queries (three blocks of the product) against 50 references: each distance is the
        // smallest ‖q − r‖ over the references, written out here in f64.
        let dim = 7;
        let mut rng = crate::rng::NoiseRng::new(3);
        let (queries, references) = (rng.normal_vec(600 * dim), rng.normal_vec(50 * dim));
        let got = nearest_distances(&queries, &references, dim);
        assert_eq!(got.len(), 600);
        for (q, &d) in queries.chunks(dim).zip(&got) {
            let want = references
                .chunks(dim)
                .map(|r| {
                    q.iter()
                        .zip(r)
                        .map(|(&a, &b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min);
            assert!((d - want).abs() < 1e-4 * want.max(1.0), "{d} vs {want}");
        }
        // No references: nothing is near.
        assert!(nearest_distances(&queries[..dim], &[], dim)[0].is_infinite());
    }

    #[test]
    fn frechet_distance_of_one_dimensional_gaussians() {
        // d² = (μ₁ − μ₂)² + (σ₁ − σ₂)²: means 1 and 4, variances 4 and 9 → 9 + 1 = 10.
        let d = frechet_distance(&[1.0], &[vec![4.0]], &[4.0], &[vec![9.0]]);
        assert!((d - 10.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn frechet_distance_of_non_commuting_covariances() {
        // For 2×2 matrices Tr √M = √(Tr M + 2√det M) (the eigenvalues of √M are √λ₁, √λ₂).
        // Σ₁ = [[2, 1], [1, 2]], Σ₂ = [[1, 0], [0, 4]]: Σ₁Σ₂ = [[2, 4], [1, 8]], trace 10, det 12,
        // so Tr √(Σ₁Σ₂) = √(10 + 2√12) = 4.1889…; d² = 4 + 5 − 2·4.1889 + ‖(1, −1)‖² = 2.6221…
        let s1 = vec![vec![2.0, 1.0], vec![1.0, 2.0]];
        let s2 = vec![vec![1.0, 0.0], vec![0.0, 4.0]];
        let expected = 9.0 - 2.0 * (10.0 + 2.0 * 12f64.sqrt()).sqrt() + 2.0;
        let d = frechet_distance(&[1.0, 0.0], &s1, &[0.0, 1.0], &s2);
        assert!((d - expected).abs() < 1e-10, "{d} vs {expected}");
        // Identical Gaussians are at distance 0.
        assert!(frechet_distance(&[0.5, 0.5], &s1, &[0.5, 0.5], &s1).abs() < 1e-10);
    }

    #[test]
    fn confidence_and_entropy_by_hand() {
        let probs = vec![vec![0.95, 0.05], vec![0.6, 0.4], vec![0.05, 0.95], vec![0.9, 0.1]];
        // Strictly above 0.9: the first and the third.
        assert_eq!(confident_share(&probs, 0.9), 0.5);
        // Ten classes, all equally common: log₂ 10.
        let uniform: Vec<usize> = (0..10).cycle().take(100).collect();
        assert!((class_entropy_bits(&uniform, 10) - 10f64.log2()).abs() < 1e-12);
        // One class only: 0 bits; two classes 3:1 → −¾log₂¾ − ¼log₂¼ = 0.811278…
        assert_eq!(class_entropy_bits(&[7; 20], 10), 0.0);
        assert!((class_entropy_bits(&[1, 1, 1, 2], 10) - 0.811_278_124_459_132_8).abs() < 1e-12);
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    }

    #[test]
    fn nearest_distances_quantiles_and_shares_by_hand() {
        // Two references in 2-d: (0, 0) and (3, 4). Query (3, 0): distances 3 and 4 → 3; query
        // (3, 4.5): 0.5.
        let d = nearest_distances(&[3.0, 0.0, 3.0, 4.5], &[0.0, 0.0, 3.0, 4.0], 2);
        assert!((d[0] - 3.0).abs() < 1e-9 && (d[1] - 0.5).abs() < 1e-6, "{d:?}");
        // NumPy: np.quantile([4, 1, 3, 2, 5], 0.1) = 1.4; np.quantile(..., 0.5) = 3.
        assert!((quantile(&[4.0, 1.0, 3.0, 2.0, 5.0], 0.1) - 1.4).abs() < 1e-12);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0, 5.0], 0.5), 3.0);
        assert_eq!(share_below(&[1.0, 2.0, 3.0, 4.0], 2.5), 0.5);
        assert_eq!(share_below(&[1.0, 2.0], 1.0), 0.0);
    }
}
