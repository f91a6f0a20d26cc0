// Similarity Procrustes alignment (scale, rotation, translation) of one point set onto another,
// and its vector-Jacobian product. Shared by the CPU and CUDA kernels; no torch.
//
// Problem: given source points x_i, target points y_i and weights w_i >= 0, find s >= 0, a
// rotation R (det R = +1) and t minimising sum_i w_i |s R x_i + t - y_i|^2. With centroids
// mx, my, centred points x~, y~, the cross-covariance S = sum_i w_i x~_i y~_i^T and the source
// variance v = sum_i w_i |x~_i|^2, the optimum is
//   R = argmax_R tr(R S)   (over rotations: this is the reflection-fixed SVD solution),
//   s = tr(R S) / v,       t = my - s R mx.
// That is what SPIN's / mmhuman3d's compute_similarity_transform computes with numpy's SVD.
//
// Rotation: Horn's method. tr(R S) = q^T N q for the unit quaternion q of R and a symmetric 4x4
// N linear in S, so the optimal q is the top eigenvector of N and tr(R S) its eigenvalue
// (= s1 + s2 + sign(det S) s3 in terms of the singular values: the reflection fix is built in).
// The top eigenvalue is the largest root of N's characteristic polynomial
//   p(l) = l^4 - 2 |S|_F^2 l^2 - 8 det(S) l + det(N),
// found by Newton's method from an upper bound (monotone for a polynomial with real roots),
// and q is the null vector of the positive semi-definite lambda I - N, found by an LDL^T
// factorisation with diagonal pivoting; one Rayleigh-quotient refinement makes q accurate to
// rounding even where the top eigenvalue is double (collinear points). All arithmetic is in
// double, whatever the input type.
//
// Ill-conditioned samples take a robust path. (1) Centring: the moments are accumulated about the
// (rounded) centroid and corrected by the residual mean (the shifted-data algorithm), so S and v
// carry rounding relative to the sets' spread, not to their distance from the origin; a set
// whose spread is 1e-6 of its offset keeps ~10 digits (a plain sum of w x x^T would keep none).
// (2) Rotation: where the top eigenvalue of N is nearly double (nearly collinear sets: Newton
// stalls about 1e-8 off and the null vector of lambda I - N is then noise), detected from the
// characteristic polynomial's slope at the root, the top eigenvector comes from a cyclic Jacobi
// eigen-decomposition of N instead, which is backward stable like an SVD (error ~ eps / gap).
// Well-conditioned samples (nearly all in practice) never run it.
//
// Degenerate inputs (documented in meshrec.ops.procrustes):
//   - total weight 0: the identity transform (s = 1, R = I, t = 0);
//   - a negative, NaN or infinite weight: NaN outputs for the sample (never a silent identity);
//   - either set's spread below rounding (all points equal within 1e-13 of their magnitude) or a
//     cross-covariance below rounding of the spreads: R = I;
//   - source variance below rounding (all source points equal): s = 0 with scaling, so every
//     point maps onto the target centroid;
//   - s >= 0 always (tr(R S) >= 0 at the optimum; rounding can only make it slightly negative).
// The backward sets the gradient components along undetermined rotation directions (equal
// eigenvalues of N, e.g. collinear points) to zero instead of dividing by zero.
#pragma once

#include <cstdint>

#include "../common/hostdevice.h"

namespace meshrec {
namespace metrics {

// Relative thresholds below which a quantity is treated as rounding noise (see above).
constexpr double kProcrustesVarianceTolerance = 1e-26;    // v <= tol * sum w |x|^2
constexpr double kProcrustesCovarianceTolerance = 1e-13;  // |S|_F <= tol * sqrt(sum w|x|^2 sum w|y|^2)
constexpr double kProcrustesGapTolerance = 1e-10;         // eigenvalue gaps <= tol * |S|_F are zero
// With |S|_F = 1 the characteristic polynomial's slope at the top eigenvalue is the product of
// its gaps to the other three (each at most 2 sqrt 3); below this the fast solver's null vector
// loses digits (measured: ~1e-5 relative error at a slope of 1e-6, 1e-10 at 1e-2) and the sample
// takes the Jacobi path.
constexpr double kProcrustesSlopeTolerance = 1e-2;
// Top eigenvalues of N this close (relative to its largest) span the optimal rotations.
constexpr double kProcrustesDegenerateTolerance = 1e-12;
// Variances below this fraction of the raw second moment (spread < 1% of the offset) are
// recomputed with the shifted-data correction (see accumulate_moments).
constexpr double kProcrustesCentringTolerance = 1e-4;

struct ProcrustesSolution {
  double weight;            // sum of weights
  double source_mean[3];
  double target_mean[3];
  double source_origin[3];  // the rounded centroids about which the moments were accumulated,
  double target_origin[3];  // and the residual means: centred x = (x - origin) - shift
  double source_shift[3];
  double target_shift[3];
  double cross[9];          // S, row-major: S[3a+b] = sum w x~_a y~_b
  double source_variance;   // v
  double cross_norm;        // |S|_F
  double quaternion[4];     // (w, x, y, z) of R when rotation_determined
  double trace;             // tr(R S)
  double scale;
  double rotation[9];       // row-major, acts on column vectors
  double translation[3];
  bool empty;               // total weight 0: identity transform
  bool invalid;             // a weight is negative, NaN or infinite: every output is NaN
  bool rotation_determined; // R depends on S (false: R = I)
  bool scale_determined;    // s depends on the inputs (false: s = 0 or fixed 1)
};

MESHREC_HOST_DEVICE inline void horn_matrix(const double* S, double* N) {
  const double xx = S[0], xy = S[1], xz = S[2], yx = S[3], yy = S[4], yz = S[5], zx = S[6], zy = S[7],
               zz = S[8];
  N[0] = xx + yy + zz;
  N[1] = N[4] = yz - zy;
  N[2] = N[8] = zx - xz;
  N[3] = N[12] = xy - yx;
  N[5] = xx - yy - zz;
  N[6] = N[9] = xy + yx;
  N[7] = N[13] = zx + xz;
  N[10] = -xx + yy - zz;
  N[11] = N[14] = yz + zy;
  N[15] = -xx - yy + zz;
}

// Adjoint of horn_matrix: gradient with respect to S of <G, N(S)> for any 4x4 G.
MESHREC_HOST_DEVICE inline void horn_matrix_adjoint(const double* G, double* grad_S) {
  const double g01 = G[1] + G[4], g02 = G[2] + G[8], g03 = G[3] + G[12];
  const double g12 = G[6] + G[9], g13 = G[7] + G[13], g23 = G[11] + G[14];
  grad_S[0] = G[0] + G[5] - G[10] - G[15];
  grad_S[4] = G[0] - G[5] + G[10] - G[15];
  grad_S[8] = G[0] - G[5] - G[10] + G[15];
  grad_S[5] = g01 + g23;   // yz
  grad_S[7] = -g01 + g23;  // zy
  grad_S[6] = g02 + g13;   // zx
  grad_S[2] = -g02 + g13;  // xz
  grad_S[1] = g03 + g12;   // xy
  grad_S[3] = -g03 + g12;  // yx
}

MESHREC_HOST_DEVICE inline double determinant3(const double* A) {
  return A[0] * (A[4] * A[8] - A[5] * A[7]) - A[1] * (A[3] * A[8] - A[5] * A[6]) +
         A[2] * (A[3] * A[7] - A[4] * A[6]);
}

MESHREC_HOST_DEVICE inline double determinant4(const double* A) {
  // Laplace expansion by 2x2 minors of the first two and last two rows.
  const double s0 = A[0] * A[5] - A[1] * A[4], s1 = A[0] * A[6] - A[2] * A[4];
  const double s2 = A[0] * A[7] - A[3] * A[4], s3 = A[1] * A[6] - A[2] * A[5];
  const double s4 = A[1] * A[7] - A[3] * A[5], s5 = A[2] * A[7] - A[3] * A[6];
  const double c5 = A[10] * A[15] - A[11] * A[14], c4 = A[9] * A[15] - A[11] * A[13];
  const double c3 = A[9] * A[14] - A[10] * A[13], c2 = A[8] * A[15] - A[11] * A[12];
  const double c1 = A[8] * A[14] - A[10] * A[12], c0 = A[8] * A[13] - A[9] * A[12];
  return s0 * c5 - s1 * c4 + s2 * c3 + s3 * c2 - s4 * c1 + s5 * c0;
}

// A unit null vector of a symmetric positive semi-definite 4x4 M (up to rounding): LDL^T with
// diagonal pivoting, stopping where the remaining diagonal is negligible (1e-12 of the largest),
// then back substitution. The pivoting keeps the multipliers bounded, so |M x| / |x| stays at the
// level of the neglected Schur complement. When the null space has several dimensions (the
// optimal rotation is not unique), x is the unit vector of it closest to (1, 0, 0, 0): for
// quaternions, the smallest rotation among the optimal ones (then e1, e2, e3 if that fails).
MESHREC_HOST_DEVICE inline void psd_null_vector4(const double* M, double* x) {
  double a[4][4];
  double L[4][4] = {{0.0}};
  int perm[4] = {0, 1, 2, 3};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) a[i][j] = M[4 * i + j];
  double scale = 0.0;
  for (int i = 0; i < 4; ++i) scale = scale > fabs(a[i][i]) ? scale : fabs(a[i][i]);
  const double negligible = 1e-12 * scale;
  int rank = 0;
  for (int k = 0; k < 3; ++k) {
    int p = k;
    for (int i = k + 1; i < 4; ++i)
      if (a[i][i] > a[p][p]) p = i;
    if (!(a[p][p] > negligible)) break;  // also stops on NaN
    if (p != k) {
      for (int j = 0; j < 4; ++j) {
        const double row = a[k][j];
        a[k][j] = a[p][j];
        a[p][j] = row;
      }
      for (int i = 0; i < 4; ++i) {
        const double column = a[i][k];
        a[i][k] = a[i][p];
        a[i][p] = column;
      }
      for (int j = 0; j < k; ++j) {
        const double multiplier = L[k][j];
        L[k][j] = L[p][j];
        L[p][j] = multiplier;
      }
      const int index = perm[k];
      perm[k] = perm[p];
      perm[p] = index;
    }
    for (int i = k + 1; i < 4; ++i) {
      const double multiplier = a[i][k] / a[k][k];
      L[i][k] = multiplier;
      for (int j = k + 1; j < 4; ++j) a[i][j] -= multiplier * a[k][j];
    }
    rank = k + 1;
  }
  // One null vector per free variable (orthonormalised), in the original coordinates.
  const int dims = 4 - rank;
  double basis[4][4];
  for (int f = 0; f < dims; ++f) {
    double y[4] = {0.0, 0.0, 0.0, 0.0};
    y[rank + f] = 1.0;
    for (int i = rank - 1; i >= 0; --i) {
      double sum = 0.0;
      for (int j = i + 1; j < 4; ++j) sum += L[j][i] * y[j];
      y[i] = -sum;
    }
    for (int i = 0; i < 4; ++i) basis[f][perm[i]] = y[i];
    for (int g = 0; g < f; ++g) {
      double dot = 0.0;
      for (int i = 0; i < 4; ++i) dot += basis[f][i] * basis[g][i];
      for (int i = 0; i < 4; ++i) basis[f][i] -= dot * basis[g][i];
    }
    double norm = 0.0;
    for (int i = 0; i < 4; ++i) norm += basis[f][i] * basis[f][i];
    norm = sqrt(norm);
    for (int i = 0; i < 4; ++i) basis[f][i] /= norm;
  }
  if (dims == 1) {
    for (int i = 0; i < 4; ++i) x[i] = basis[0][i];
    return;
  }
  for (int axis = 0; axis < 4; ++axis) {
    double norm = 0.0;
    for (int i = 0; i < 4; ++i) {
      x[i] = 0.0;
      for (int f = 0; f < dims; ++f) x[i] += basis[f][axis] * basis[f][i];
      norm += x[i] * x[i];
    }
    if (norm > 1e-12 || axis == 3) {
      norm = sqrt(norm);
      for (int i = 0; i < 4; ++i) x[i] /= norm;
      return;
    }
  }
}

MESHREC_HOST_DEVICE inline void symmetric_eigen4(const double* A, double* values, double* V);

// Top eigenvector of a symmetric 4x4 N by Jacobi (backward stable), for nearly double top
// eigenvalues. Where the top eigenvalue is repeated (within kProcrustesDegenerateTolerance),
// every unit vector of its eigenspace is optimal: take the one closest to (1, 0, 0, 0), the
// smallest rotation (then e1, e2, e3), as psd_null_vector4 and the reference do. Returns the
// eigenvalue q^T N q.
MESHREC_HOST_DEVICE inline double top_eigenvector_jacobi(const double* N, double* q) {
  double values[4], V[16];
  symmetric_eigen4(N, values, V);
  double top = values[0], largest = fabs(values[0]);
  for (int k = 1; k < 4; ++k) {
    top = top > values[k] ? top : values[k];
    largest = largest > fabs(values[k]) ? largest : fabs(values[k]);
  }
  bool in_space[4];
  for (int k = 0; k < 4; ++k) in_space[k] = top - values[k] <= kProcrustesDegenerateTolerance * largest;
  for (int axis = 0; axis < 4; ++axis) {
    double norm = 0.0;
    for (int i = 0; i < 4; ++i) {
      q[i] = 0.0;
      for (int k = 0; k < 4; ++k)
        if (in_space[k]) q[i] += V[4 * i + k] * V[4 * axis + k];
      norm += q[i] * q[i];
    }
    if (norm > 1e-12 || axis == 3) {
      norm = sqrt(norm);
      for (int i = 0; i < 4; ++i) q[i] /= norm;
      break;
    }
  }
  double quotient = 0.0;
  for (int i = 0; i < 4; ++i) {
    double row = 0.0;
    for (int j = 0; j < 4; ++j) row += N[4 * i + j] * q[j];
    quotient += q[i] * row;
  }
  return quotient;
}

// Top eigenvector q of N(S) and its eigenvalue q^T N q = max over rotations of tr(R S).
// Requires |S|_F > 0. `bound` is an upper bound on that maximum (the Cauchy-Schwarz bound
// sqrt(v_x v_y)), which starts Newton close to the root for well-aligned point sets.
MESHREC_HOST_DEVICE inline double top_quaternion(const double* S, double cross_norm, double bound, double* q) {
  double unit_S[9];
  for (int k = 0; k < 9; ++k) unit_S[k] = S[k] / cross_norm;
  double N[16];
  horn_matrix(unit_S, N);
  // With |S|_F = 1: p(l) = l^4 - 2 l^2 + c1 l + c0 and every eigenvalue lies in [-sqrt 3, sqrt 3].
  const double c1 = -8.0 * determinant3(unit_S);
  const double c0 = determinant4(N);
  // Start a little above the bound: from just above a double root (collinear points) the
  // polynomial is below rounding and a Newton step would be noise.
  const double normalised_bound = (1.0 + 1e-6) * bound / cross_norm;
  double lambda = normalised_bound < 1.7320508075688772 ? normalised_bound : 1.7320508075688772;
  double lower = N[0];  // a Rayleigh quotient: the top eigenvalue is at least every diagonal entry
  for (int k = 1; k < 4; ++k) lower = lower > N[5 * k] ? lower : N[5 * k];
  for (int iteration = 0; iteration < 80; ++iteration) {
    const double l2 = lambda * lambda;
    const double p = (l2 - 2.0) * l2 + c1 * lambda + c0;
    const double dp = (4.0 * l2 - 4.0) * lambda + c1;
    if (!(p > 0.0) || !(dp > 0.0)) break;
    const double step = p / dp;
    if (!(lambda - step > lower)) {
      lambda = lower;
      break;
    }
    lambda -= step;
    if (!(step > 1e-16 * fabs(lambda))) break;
  }
  double M[16];
  for (int pass = 0; pass < 3; ++pass) {
    for (int k = 0; k < 16; ++k) M[k] = -N[k];
    for (int k = 0; k < 4; ++k) M[5 * k] += lambda;
    psd_null_vector4(M, q);
    double quotient = 0.0;
    for (int i = 0; i < 4; ++i) {
      double row = 0.0;
      for (int j = 0; j < 4; ++j) row += N[4 * i + j] * q[j];
      quotient += q[i] * row;
    }
    // Newton stalls near a double root (collinear points), about 1e-8 off; the Rayleigh quotient
    // of the vector found is far more accurate, and refactorising with it resolves the eigenspace
    // (and picks the smallest rotation in it). A simple root needs one pass.
    const bool converged = fabs(quotient - lambda) <= 1e-13;
    lambda = quotient;
    if (converged) break;
  }
  // The slope p'(lambda) = product of the gaps to the other eigenvalues: small means a nearly
  // double top eigenvalue, where the null vector above is inaccurate (see the header comment).
  const double slope = (4.0 * lambda * lambda - 4.0) * lambda + c1;
  if (!(slope > kProcrustesSlopeTolerance)) lambda = top_eigenvector_jacobi(N, q);
  if (q[0] < 0.0)
    for (int k = 0; k < 4; ++k) q[k] = -q[k];
  return lambda * cross_norm;
}

// Rotation matrix (row-major) of a unit quaternion (w, x, y, z), homogeneous form.
MESHREC_HOST_DEVICE inline void quaternion_to_rotation(const double* q, double* R) {
  const double w = q[0], x = q[1], y = q[2], z = q[3];
  R[0] = w * w + x * x - y * y - z * z;
  R[1] = 2.0 * (x * y - w * z);
  R[2] = 2.0 * (x * z + w * y);
  R[3] = 2.0 * (y * x + w * z);
  R[4] = w * w - x * x + y * y - z * z;
  R[5] = 2.0 * (y * z - w * x);
  R[6] = 2.0 * (z * x - w * y);
  R[7] = 2.0 * (z * y + w * x);
  R[8] = w * w - x * x - y * y + z * z;
}

// Gradient with respect to q of <G, R(q)> (homogeneous form).
MESHREC_HOST_DEVICE inline void quaternion_to_rotation_adjoint(const double* q, const double* G, double* grad_q) {
  const double w = q[0], x = q[1], y = q[2], z = q[3];
  grad_q[0] = 2.0 * (w * (G[0] + G[4] + G[8]) + x * (G[7] - G[5]) + y * (G[2] - G[6]) + z * (G[3] - G[1]));
  grad_q[1] = 2.0 * (w * (G[7] - G[5]) + x * (G[0] - G[4] - G[8]) + y * (G[1] + G[3]) + z * (G[2] + G[6]));
  grad_q[2] = 2.0 * (w * (G[2] - G[6]) + x * (G[1] + G[3]) + y * (-G[0] + G[4] - G[8]) + z * (G[5] + G[7]));
  grad_q[3] = 2.0 * (w * (G[3] - G[1]) + x * (G[2] + G[6]) + y * (G[5] + G[7]) + z * (-G[0] - G[4] + G[8]));
}

// Eigen-decomposition of a symmetric 4x4 by cyclic Jacobi rotations: A = V diag(values) V^T,
// eigenvectors in the columns of V (row-major). Used by the backward, where all eigenpairs
// are needed and robustness matters more than speed.
MESHREC_HOST_DEVICE inline void symmetric_eigen4(const double* A, double* values, double* V) {
  double a[4][4];
  double v[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      a[i][j] = A[4 * i + j];
      v[i][j] = i == j ? 1.0 : 0.0;
    }
  for (int sweep = 0; sweep < 32; ++sweep) {
    double off = 0.0, total = 0.0;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        total += a[i][j] * a[i][j];
        if (i != j) off += a[i][j] * a[i][j];
      }
    if (!(off > 1e-32 * total)) break;
    for (int p = 0; p < 3; ++p)
      for (int r = p + 1; r < 4; ++r) {
        const double apr = a[p][r];
        if (apr == 0.0) continue;
        const double theta = (a[r][r] - a[p][p]) / (2.0 * apr);
        const double t = fabs(theta) > 1e150 ? 0.5 / theta
                                              : (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        a[p][p] -= t * apr;
        a[r][r] += t * apr;
        a[p][r] = a[r][p] = 0.0;
        for (int k = 0; k < 4; ++k) {
          if (k != p && k != r) {
            const double akp = a[k][p], akr = a[k][r];
            a[k][p] = a[p][k] = c * akp - s * akr;
            a[k][r] = a[r][k] = s * akp + c * akr;
          }
          const double vkp = v[k][p], vkr = v[k][r];
          v[k][p] = c * vkp - s * vkr;
          v[k][r] = s * vkp + c * vkr;
        }
      }
  }
  for (int i = 0; i < 4; ++i) {
    values[i] = a[i][i];
    for (int j = 0; j < 4; ++j) V[4 * i + j] = v[i][j];
  }
}

// Centred coordinates of point i, as the moments saw them: (x - origin) - shift.
template <typename T>
MESHREC_HOST_DEVICE inline void centred_point(const ProcrustesSolution& sol, const T* source, const T* target,
                                              int64_t i, double* x, double* y) {
  for (int a = 0; a < 3; ++a) {
    x[a] = (static_cast<double>(source[3 * i + a]) - sol.source_origin[a]) - sol.source_shift[a];
    y[a] = (static_cast<double>(target[3 * i + a]) - sol.target_origin[a]) - sol.target_shift[a];
  }
}

// The second moments of one sample about out.source_origin / target_origin (set beforehand):
// raw second moments, variances and the cross-covariance S (out.cross). With kShifted, the
// moments are corrected by the residual means (shifted data, S = sum w a b^T - W da db^T with
// a = x - origin and da = sum w a / W, da rounding-small), so S and the variances carry rounding
// relative to the spread rather than to the offset; the shifts are stored for centred_point.
template <typename T, bool kShifted>
MESHREC_HOST_DEVICE inline void accumulate_moments(const T* source, const T* target, const T* weights, int64_t count,
                                                   ProcrustesSolution& out, double& second_x, double& second_y,
                                                   double& vx, double& vy) {
  second_x = second_y = vx = vy = 0.0;
  double da[3] = {0.0, 0.0, 0.0}, db[3] = {0.0, 0.0, 0.0};
  for (int k = 0; k < 9; ++k) out.cross[k] = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    double x[3], y[3];
    for (int a = 0; a < 3; ++a) {
      const double xa = static_cast<double>(source[3 * i + a]);
      const double ya = static_cast<double>(target[3 * i + a]);
      second_x += w * xa * xa;
      second_y += w * ya * ya;
      x[a] = xa - out.source_origin[a];
      y[a] = ya - out.target_origin[a];
      if (kShifted) {
        da[a] += w * x[a];
        db[a] += w * y[a];
      }
    }
    vx += w * (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
    vy += w * (y[0] * y[0] + y[1] * y[1] + y[2] * y[2]);
    for (int a = 0; a < 3; ++a) {
      const double wx = w * x[a];
      for (int b = 0; b < 3; ++b) out.cross[3 * a + b] += wx * y[b];
    }
  }
  for (int a = 0; a < 3; ++a) {
    out.source_shift[a] = kShifted ? da[a] / out.weight : 0.0;
    out.target_shift[a] = kShifted ? db[a] / out.weight : 0.0;
    out.source_mean[a] = out.source_origin[a] + out.source_shift[a];
    out.target_mean[a] = out.target_origin[a] + out.target_shift[a];
  }
  if (kShifted) {
    for (int a = 0; a < 3; ++a) {
      vx -= da[a] * out.source_shift[a];
      vy -= db[a] * out.target_shift[a];
      for (int b = 0; b < 3; ++b) out.cross[3 * a + b] -= da[a] * out.target_shift[b];
    }
  }
}

// Weighted moments and the optimal similarity transform of one sample. `weights` may be null
// (all ones). Points are count x 3, row-major.
template <typename T>
MESHREC_HOST_DEVICE inline void solve_procrustes(const T* source, const T* target, const T* weights, int64_t count,
                                                 bool scaling, ProcrustesSolution& out) {
  double weight = 0.0, sx[3] = {0.0, 0.0, 0.0}, sy[3] = {0.0, 0.0, 0.0};
  bool invalid = false;
  for (int64_t i = 0; i < count; ++i) {
    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    invalid = invalid || !(w >= 0.0 && w <= 1.7976931348623157e308);  // negative, NaN or infinite
    weight += w;
    for (int a = 0; a < 3; ++a) {
      sx[a] += w * static_cast<double>(source[3 * i + a]);
      sy[a] += w * static_cast<double>(target[3 * i + a]);
    }
  }
  out.weight = weight;
  out.invalid = invalid;
  out.empty = !invalid && !(weight > 0.0);
  out.rotation_determined = false;
  out.scale_determined = false;
  for (int k = 0; k < 9; ++k) {
    out.cross[k] = 0.0;
    out.rotation[k] = (k % 4 == 0) ? 1.0 : 0.0;
  }
  out.quaternion[0] = 1.0;
  out.quaternion[1] = out.quaternion[2] = out.quaternion[3] = 0.0;
  out.source_variance = 0.0;
  out.cross_norm = 0.0;
  out.trace = 0.0;
  for (int a = 0; a < 3; ++a) out.source_shift[a] = out.target_shift[a] = 0.0;
  if (out.empty || out.invalid) {
    // Invalid weights poison the whole sample (the metric of that sample is NaN, never the
    // identity's error); zero total weight is the documented identity.
    const double fill = out.invalid ? NAN : 0.0;
    for (int a = 0; a < 3; ++a) {
      out.source_mean[a] = out.target_mean[a] = out.translation[a] = fill;
      out.source_origin[a] = out.target_origin[a] = fill;
    }
    out.scale = out.invalid ? NAN : 1.0;
    if (out.invalid)
      for (int k = 0; k < 9; ++k) out.rotation[k] = NAN;
    return;
  }
  for (int a = 0; a < 3; ++a) {
    out.source_origin[a] = sx[a] / weight;
    out.target_origin[a] = sy[a] / weight;
  }
  double second_x, second_y, vx, vy;
  accumulate_moments<T, false>(source, target, weights, count, out, second_x, second_y, vx, vy);
  // A set whose spread is small against its distance from the origin loses digits to the centring
  // (rounding of the centroid ~ eps |offset|): redo the moments with the residual-mean correction.
  // Typical data (spread > 1% of the offset) never does.
  if (!(vx > kProcrustesCentringTolerance * second_x) || !(vy > kProcrustesCentringTolerance * second_y)) {
    accumulate_moments<T, true>(source, target, weights, count, out, second_x, second_y, vx, vy);
  }
  vx = vx > 0.0 ? vx : (vx == vx ? 0.0 : vx);  // rounding can leave -0.x ulp; NaN stays NaN
  vy = vy > 0.0 ? vy : (vy == vy ? 0.0 : vy);
  out.source_variance = vx;
  double norm2 = 0.0;
  for (int k = 0; k < 9; ++k) norm2 += out.cross[k] * out.cross[k];
  out.cross_norm = sqrt(norm2);
  // Spreads below rounding (points equal within 1e-13 of their magnitude) make S noise.
  const bool source_spread = vx > kProcrustesVarianceTolerance * second_x;
  const bool target_spread = vy > kProcrustesVarianceTolerance * second_y;
  if (source_spread && target_spread && out.cross_norm > kProcrustesCovarianceTolerance * sqrt(vx * vy)) {
    out.trace = top_quaternion(out.cross, out.cross_norm, sqrt(vx * vy) * (1.0 + 1e-12), out.quaternion);
    quaternion_to_rotation(out.quaternion, out.rotation);
    out.rotation_determined = true;
  } else if (!(out.cross_norm == out.cross_norm) || !(second_x == second_x) || !(second_y == second_y)) {
    // NaN or infinite points: NaN outputs for this sample.
    out.trace = NAN;
    for (int k = 0; k < 9; ++k) out.rotation[k] = NAN;
  } else {
    out.trace = out.cross[0] + out.cross[4] + out.cross[8];  // tr(I S)
  }
  if (!scaling) {
    out.scale = 1.0;
  } else if (!(out.trace == out.trace)) {
    out.scale = NAN;
  } else if (source_spread && out.trace > 0.0) {
    out.scale = out.trace / vx;
    out.scale_determined = true;
  } else {
    out.scale = 0.0;  // no source spread, or tr(R S) <= 0 (never negative: s >= 0 is the contract)
  }
  for (int a = 0; a < 3; ++a) {
    const double* row = out.rotation + 3 * a;
    out.translation[a] = out.target_mean[a] - out.scale * (row[0] * out.source_mean[0] + row[1] * out.source_mean[1] +
                                                           row[2] * out.source_mean[2]);
  }
}

// Applies the solved transform, aligned_i = s R x_i + t, and writes |aligned_i - y_i|. Computed
// as s R (x_i - mx) + my: the same points, without the cancellation between s R x_i and t that
// costs digits when a set is far from the origin compared with its spread (s |mx| >> |aligned|).
template <typename T>
MESHREC_HOST_DEVICE inline void apply_similarity(const ProcrustesSolution& solution, const T* source, const T* target,
                                                 int64_t count, T* aligned, T* residual) {
  const double* R = solution.rotation;
  const double s = solution.scale;
  for (int64_t i = 0; i < count; ++i) {
    double c[3], unused[3];
    centred_point(solution, source, target, i, c, unused);
    const double x = c[0], y = c[1], z = c[2];
    double squared = 0.0;
    for (int a = 0; a < 3; ++a) {
      const double value = s * (R[3 * a] * x + R[3 * a + 1] * y + R[3 * a + 2] * z) + solution.target_mean[a];
      const double difference = value - static_cast<double>(target[3 * i + a]);
      squared += difference * difference;
      aligned[3 * i + a] = static_cast<T>(value);
    }
    residual[i] = static_cast<T>(sqrt(squared));
  }
}

// The gradient reaching aligned_i: grad_aligned_i plus, through residual_i = |aligned_i - y_i|,
// grad_residual_i times the unit vector (zero where the residual is 0: the norm's subgradient).
// Either gradient may be null (zero). Writes the residual direction's share into `through`.
template <typename T>
MESHREC_HOST_DEVICE inline void aligned_gradient(const ProcrustesSolution& sol, const T* source, const T* target,
                                                 const T* grad_aligned, const T* grad_residual, int64_t i, double* g,
                                                 double* through) {
  for (int a = 0; a < 3; ++a) {
    g[a] = grad_aligned ? static_cast<double>(grad_aligned[3 * i + a]) : 0.0;
    through[a] = 0.0;
  }
  if (!grad_residual) return;
  const double* R = sol.rotation;
  double x[3], unused[3];
  centred_point(sol, source, target, i, x, unused);  // as apply_similarity
  double difference[3], squared = 0.0;
  for (int a = 0; a < 3; ++a) {
    difference[a] = sol.scale * (R[3 * a] * x[0] + R[3 * a + 1] * x[1] + R[3 * a + 2] * x[2]) + sol.target_mean[a] -
                    static_cast<double>(target[3 * i + a]);
    squared += difference[a] * difference[a];
  }
  if (!(squared > 0.0)) return;
  const double factor = static_cast<double>(grad_residual[i]) / sqrt(squared);
  for (int a = 0; a < 3; ++a) {
    through[a] = factor * difference[a];
    g[a] += through[a];
  }
}

// Vector-Jacobian product of (aligned, scale, rotation, translation, residual) with respect to
// (source, target, weights) for one sample. Every incoming gradient may be null (zero), as may
// `weights` and `grad_weights`.
template <typename T>
MESHREC_HOST_DEVICE inline void procrustes_backward_sample(const T* source, const T* target, const T* weights,
                                                           int64_t count, bool scaling, const T* grad_aligned,
                                                           const T* grad_scale_in, const T* grad_rotation_in,
                                                           const T* grad_translation_in, const T* grad_residual,
                                                           T* grad_source, T* grad_target, T* grad_weights) {
  ProcrustesSolution sol;
  solve_procrustes(source, target, weights, count, scaling, sol);
  double g[3], through[3];
  if (sol.invalid) {  // NaN outputs: NaN gradients
    for (int64_t i = 0; i < count; ++i) {
      for (int a = 0; a < 3; ++a) grad_source[3 * i + a] = grad_target[3 * i + a] = static_cast<T>(NAN);
      if (grad_weights) grad_weights[i] = static_cast<T>(NAN);
    }
    return;
  }
  if (sol.empty) {  // aligned = source
    for (int64_t i = 0; i < count; ++i) {
      aligned_gradient(sol, source, target, grad_aligned, grad_residual, i, g, through);
      for (int a = 0; a < 3; ++a) {
        grad_source[3 * i + a] = static_cast<T>(g[a]);
        grad_target[3 * i + a] = static_cast<T>(-through[a]);
      }
      if (grad_weights) grad_weights[i] = T(0);
    }
    return;
  }
  const double* R = sol.rotation;
  const double s = sol.scale;
  const double* mx = sol.source_mean;
  const double* my = sol.target_mean;
  double g_scale = grad_scale_in ? static_cast<double>(*grad_scale_in) : 0.0;
  double g_R[9], g_t[3];
  for (int k = 0; k < 9; ++k) g_R[k] = grad_rotation_in ? static_cast<double>(grad_rotation_in[k]) : 0.0;
  for (int a = 0; a < 3; ++a) g_t[a] = grad_translation_in ? static_cast<double>(grad_translation_in[a]) : 0.0;
  // aligned_i = s R x_i + t
  for (int64_t i = 0; i < count; ++i) {
    const double x[3] = {static_cast<double>(source[3 * i]), static_cast<double>(source[3 * i + 1]),
                         static_cast<double>(source[3 * i + 2])};
    aligned_gradient(sol, source, target, grad_aligned, grad_residual, i, g, through);
    for (int a = 0; a < 3; ++a) {
      g_scale += g[a] * (R[3 * a] * x[0] + R[3 * a + 1] * x[1] + R[3 * a + 2] * x[2]);
      for (int b = 0; b < 3; ++b) g_R[3 * a + b] += s * g[a] * x[b];
      g_t[a] += g[a];
    }
  }
  // t = my - s R mx
  double g_mx[3], g_my[3];
  for (int a = 0; a < 3; ++a) {
    g_my[a] = g_t[a];
    g_scale -= g_t[a] * (R[3 * a] * mx[0] + R[3 * a + 1] * mx[1] + R[3 * a + 2] * mx[2]);
    for (int b = 0; b < 3; ++b) g_R[3 * a + b] -= s * g_t[a] * mx[b];
  }
  for (int b = 0; b < 3; ++b) g_mx[b] = -s * (R[b] * g_t[0] + R[3 + b] * g_t[1] + R[6 + b] * g_t[2]);
  // s = tr(R S) / v
  double g_trace = 0.0, g_variance = 0.0;
  if (sol.scale_determined) {
    g_trace = g_scale / sol.source_variance;
    g_variance = -g_scale * s / sol.source_variance;
  }
  // tr(R S): d/dS = R^T (exact for fixed R, and for the optimal R since tr(R S) is stationary in R)
  double g_S[9];
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) g_S[3 * a + b] = g_trace * R[3 * b + a];
  if (sol.rotation_determined) {
    // R = R(q), q the top eigenvector of N(S): dq = sum_k v_k v_k^T dN q / (l1 - l_k).
    double g_q[4];
    quaternion_to_rotation_adjoint(sol.quaternion, g_R, g_q);
    double unit_S[9], N[16];
    for (int k = 0; k < 9; ++k) unit_S[k] = sol.cross[k] / sol.cross_norm;
    horn_matrix(unit_S, N);
    const double* q = sol.quaternion;
    const double top = sol.trace / sol.cross_norm;
    double G[16] = {0.0};
    // z = sum_k v_k (v_k . g_q) / gap_k over the other eigenvectors solves (top I - N + q q^T) z =
    // (I - q q^T) g_q: that matrix has the gaps and 1 as eigenvalues. Its determinant (the product
    // of the gaps) bounds the smallest gap from below (the others are at most 2 sqrt 2), so a
    // Cholesky solve is safe when it exceeds 8 * tolerance; otherwise the eigen-decomposition
    // drops the undetermined directions explicitly.
    double A[4][4], rhs[4];
    double projection = 0.0;
    for (int i = 0; i < 4; ++i) projection += q[i] * g_q[i];
    for (int i = 0; i < 4; ++i) {
      rhs[i] = g_q[i] - projection * q[i];
      for (int j = 0; j < 4; ++j) A[i][j] = (i == j ? top : 0.0) - N[4 * i + j] + q[i] * q[j];
    }
    double determinant = 1.0;
    for (int k = 0; k < 4; ++k) {
      for (int i = k + 1; i < 4; ++i) {
        const double multiplier = A[i][k] / A[k][k];
        for (int j = k + 1; j < 4; ++j) A[i][j] -= multiplier * A[k][j];
        rhs[i] -= multiplier * rhs[k];
        A[i][k] = multiplier;
      }
      determinant *= A[k][k];
      if (!(A[k][k] > 0.0)) break;
    }
    if (determinant > 8.0 * kProcrustesGapTolerance) {
      double z[4];
      for (int i = 3; i >= 0; --i) {
        double sum = rhs[i];
        for (int j = i + 1; j < 4; ++j) sum -= A[i][j] * z[j];
        z[i] = sum / A[i][i];
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) G[4 * i + j] = z[i] * q[j] / sol.cross_norm;
    } else {
      double values[4], V[16];
      symmetric_eigen4(N, values, V);
      for (int k = 0; k < 4; ++k) {
        const double gap = top - values[k];
        if (!(gap > kProcrustesGapTolerance)) continue;  // q itself, or an undetermined direction
        double along = 0.0;
        for (int i = 0; i < 4; ++i) along += V[4 * i + k] * g_q[i];
        const double c = along / (gap * sol.cross_norm);
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) G[4 * i + j] += c * V[4 * i + k] * q[j];
      }
    }
    double g_S_rotation[9];
    horn_matrix_adjoint(G, g_S_rotation);
    for (int k = 0; k < 9; ++k) g_S[k] += g_S_rotation[k];
  }
  // Moments: S = sum w x~ y~^T, v = sum w |x~|^2, mx = sum w x / W, my = sum w y / W. The
  // centring terms cancel because sum w x~ = sum w y~ = 0. The residuals add -through to y.
  const double inv_weight = 1.0 / sol.weight;
  for (int64_t i = 0; i < count; ++i) {
    const double w = weights ? static_cast<double>(weights[i]) : 1.0;
    double x[3], y[3];
    centred_point(sol, source, target, i, x, y);
    aligned_gradient(sol, source, target, grad_aligned, grad_residual, i, g, through);
    double g_w = 0.0;
    for (int a = 0; a < 3; ++a) {
      const double Sy = g_S[3 * a] * y[0] + g_S[3 * a + 1] * y[1] + g_S[3 * a + 2] * y[2];
      const double STx = g_S[a] * x[0] + g_S[3 + a] * x[1] + g_S[6 + a] * x[2];
      const double g_direct = s * (R[a] * g[0] + R[3 + a] * g[1] + R[6 + a] * g[2]);
      grad_source[3 * i + a] =
          static_cast<T>(g_direct + w * Sy + 2.0 * w * g_variance * x[a] + w * inv_weight * g_mx[a]);
      grad_target[3 * i + a] = static_cast<T>(w * STx + w * inv_weight * g_my[a] - through[a]);
      g_w += x[a] * Sy + inv_weight * (g_mx[a] * x[a] + g_my[a] * y[a]);
    }
    g_w += g_variance * (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
    if (grad_weights) grad_weights[i] = static_cast<T>(g_w);
  }
}

}  // namespace metrics
}  // namespace meshrec
