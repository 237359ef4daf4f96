/* Breadth-first search on a generated undirected graph with skewed degrees.
 *
 * Usage: bfs [vertices]   (default 8000; about 1.2 M references under lackey)
 * 4 edges per vertex; each endpoint is floor(n u^2) for u uniform in [0, 1), so
 * low ids are hubs (degree ~ id^-1/2), then scattered by a multiplicative
 * permutation of the ids. CSR adjacency by counting sort; BFS with an array
 * queue and a distance array, from 2 roots. xorshift64 with a fixed seed.
 * Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

static unsigned long long state = 0x2545f4914f6cdd1dULL;
static unsigned long long next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

static long endpoint(long n) {
  double u = (double)(next() >> 11) * (1.0 / 9007199254740992.0);
  long v = (long)(u * u * (double)n);
  return (long)((v * 2654435761LL) % n); /* a bijection when n is not a multiple of 2654435761 */
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 8000;
  if (n < 2) {
    fprintf(stderr, "bfs: vertices must be >= 2, given %s\n", argv[1]);
    return 2;
  }
  long m = 4 * n;
  long *src = malloc(m * sizeof(long)), *dst = malloc(m * sizeof(long));
  long *rowptr = calloc(n + 1, sizeof(long)), *fill = malloc(n * sizeof(long));
  long *adj = malloc(2 * m * sizeof(long));
  long *dist = malloc(n * sizeof(long)), *queue = malloc(n * sizeof(long));
  if (!src || !dst || !rowptr || !fill || !adj || !dist || !queue) return 3;
  for (long e = 0; e < m; e++) {
    src[e] = endpoint(n);
    dst[e] = endpoint(n);
    rowptr[src[e] + 1]++;
    rowptr[dst[e] + 1]++;
  }
  for (long v = 0; v < n; v++) {
    rowptr[v + 1] += rowptr[v];
    fill[v] = rowptr[v];
  }
  for (long e = 0; e < m; e++) {
    adj[fill[src[e]]++] = dst[e];
    adj[fill[dst[e]]++] = src[e];
  }
  long reached = 0, far = 0;
  for (int root = 0; root < 2; root++) {
    for (long v = 0; v < n; v++) dist[v] = -1;
    long head = 0, tail = 0, r = endpoint(n);
    dist[r] = 0;
    queue[tail++] = r;
    while (head < tail) {
      long u = queue[head++];
      for (long k = rowptr[u]; k < rowptr[u + 1]; k++) {
        long w = adj[k];
        if (dist[w] < 0) {
          dist[w] = dist[u] + 1;
          queue[tail++] = w;
        }
      }
    }
    reached += tail;
    far += dist[queue[tail - 1]];
  }
  printf("%ld %ld\n", reached, far);
  return 0;
}
