/* Dense streams: a[i] = b[i] + s * c[i] over three arrays of n doubles, 3 sweeps.
 *
 * Usage: stream_triad [n]   (default 100000; about 1.1 M references under lackey)
 * Part of jaxsys.sims.traces (papers/prefetch.md 3): the simplest streaming workload.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  if (n < 1) {
    fprintf(stderr, "stream_triad: n must be >= 1, given %s\n", argv[1]);
    return 2;
  }
  double *a = malloc(n * sizeof(double));
  double *b = malloc(n * sizeof(double));
  double *c = malloc(n * sizeof(double));
  if (!a || !b || !c) return 3;
  for (long i = 0; i < n; i++) {
    b[i] = (double)i;
    c[i] = (double)(n - i);
  }
  double s = 0.5;
  for (int rep = 0; rep < 3; rep++) {
    for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
    s += 0.25;
  }
  printf("%f\n", a[n / 2]);
  return 0;
}
