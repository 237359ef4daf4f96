/* Tiled matrix multiply C = A B of n x n doubles with 16 x 16 x 16 tiles.
 *
 * Usage: matmul [n]   (n a multiple of 16; default 80; about 1.1 M references under lackey)
 * Loop order ii, jj, kk, then i, j, k; the k loop reads A[i][k] (unit stride) and
 * B[k][j] (stride n). Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

#define T 16

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 80;
  if (n < T || n % T != 0) {
    fprintf(stderr, "matmul: n must be a positive multiple of %d, given %s\n", T, argv[1]);
    return 2;
  }
  double *a = malloc(n * n * sizeof(double));
  double *b = malloc(n * n * sizeof(double));
  double *c = malloc(n * n * sizeof(double));
  if (!a || !b || !c) return 3;
  for (long k = 0; k < n * n; k++) {
    a[k] = (double)(k % 13);
    b[k] = (double)(k % 11);
    c[k] = 0.0;
  }
  for (long ii = 0; ii < n; ii += T)
    for (long jj = 0; jj < n; jj += T)
      for (long kk = 0; kk < n; kk += T)
        for (long i = ii; i < ii + T; i++)
          for (long j = jj; j < jj + T; j++) {
            double s = c[i * n + j];
            for (long k = kk; k < kk + T; k++) s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
          }
  printf("%f\n", c[(n / 2) * n + n / 3]);
  return 0;
}
