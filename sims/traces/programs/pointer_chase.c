/* Pointer chasing over a random cyclic permutation: the negative control.
 *
 * Usage: pointer_chase [n]   (default 32768 nodes of 64 B; about 0.8 M references under lackey)
 * Sattolo's algorithm makes one cycle through all n nodes; the walk follows
 * 8 n next pointers (8 laps), reading each node's value on the way. No spatial
 * or stride pattern to learn. xorshift64 with a fixed seed.
 * Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

struct node {
  struct node *next;
  long value;
  long pad[6];
};

static unsigned long long state = 0xbb67ae8584caa73bULL;
static unsigned long long next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 32768;
  if (n < 2) {
    fprintf(stderr, "pointer_chase: n must be >= 2, given %s\n", argv[1]);
    return 2;
  }
  struct node *nodes = malloc(n * sizeof(struct node));
  long *perm = malloc(n * sizeof(long));
  if (!nodes || !perm) return 3;
  for (long i = 0; i < n; i++) perm[i] = i;
  for (long i = n - 1; i > 0; i--) { /* Sattolo: j < i gives a single cycle */
    long j = (long)(next() % (unsigned long long)i);
    long t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (long i = 0; i < n; i++) {
    nodes[perm[i]].next = &nodes[perm[(i + 1) % n]];
    nodes[i].value = i;
  }
  long sum = 0;
  struct node *p = &nodes[0];
  for (long step = 0; step < 8 * n; step++) {
    sum += p->value;
    p = p->next;
  }
  printf("%ld\n", sum);
  return 0;
}
