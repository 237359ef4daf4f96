/* Sparse matrix-vector product y = A x in CSR, 3 times, on a generated matrix.
 *
 * Usage: spmv_csr [rows]   (default 12000; about 1.4 M references under lackey)
 * Row lengths are heavy-tailed (1 + 64 / (1 + r) for r uniform in [0, 64), so a
 * few rows are long), column indices are uniform over the n columns. The random
 * numbers come from a xorshift64 generator with a fixed seed.
 * Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

static unsigned long long state = 0x9e3779b97f4a7c15ULL;
static unsigned long long next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 12000;
  if (n < 1) {
    fprintf(stderr, "spmv_csr: rows must be >= 1, given %s\n", argv[1]);
    return 2;
  }
  long *rowptr = malloc((n + 1) * sizeof(long));
  if (!rowptr) return 3;
  rowptr[0] = 0;
  for (long i = 0; i < n; i++) rowptr[i + 1] = rowptr[i] + 1 + 64 / (1 + (long)(next() % 64));
  long nnz = rowptr[n];
  int *col = malloc(nnz * sizeof(int));
  double *val = malloc(nnz * sizeof(double));
  double *x = malloc(n * sizeof(double));
  double *y = malloc(n * sizeof(double));
  if (!col || !val || !x || !y) return 3;
  for (long k = 0; k < nnz; k++) {
    col[k] = (int)(next() % (unsigned long long)n);
    val[k] = 1.0 / (double)(1 + k % 5);
  }
  for (long i = 0; i < n; i++) x[i] = 1.0;
  for (int rep = 0; rep < 3; rep++) {
    for (long i = 0; i < n; i++) {
      double s = 0.0;
      for (long k = rowptr[i]; k < rowptr[i + 1]; k++) s += val[k] * x[col[k]];
      y[i] = s;
    }
    double *t = x;
    x = y;
    y = t;
  }
  printf("%ld %f\n", nnz, x[n / 2]);
  return 0;
}
