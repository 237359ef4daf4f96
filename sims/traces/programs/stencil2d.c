/* 2-D 5-point Jacobi stencil on an n x n grid of doubles, 4 sweeps, row-major.
 *
 * Usage: stencil2d [n]   (default 200; about 1.0 M references under lackey)
 * v[i][j] = 0.2 (u[i][j] + u[i-1][j] + u[i+1][j] + u[i][j-1] + u[i][j+1]) on the
 * interior, then u and v swap. Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

static void sweep(long n, const double *u, double *v) {
  for (long i = 1; i < n - 1; i++)
    for (long j = 1; j < n - 1; j++)
      v[i * n + j] = 0.2 * (u[i * n + j] + u[(i - 1) * n + j] + u[(i + 1) * n + j] +
                            u[i * n + j - 1] + u[i * n + j + 1]);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 200;
  if (n < 3) {
    fprintf(stderr, "stencil2d: n must be >= 3, given %s\n", argv[1]);
    return 2;
  }
  double *u = malloc(n * n * sizeof(double));
  double *v = malloc(n * n * sizeof(double));
  if (!u || !v) return 3;
  for (long k = 0; k < n * n; k++) u[k] = v[k] = (double)(k % 7);
  for (int it = 0; it < 4; it++) {
    sweep(n, u, v);
    double *t = u;
    u = v;
    v = t;
  }
  printf("%f\n", u[(n / 2) * n + n / 2]);
  return 0;
}
