/* Hash join: build a chained hash table on R (n tuples), probe it with S (4n keys).
 *
 * Usage: hash_join [n]   (default 16384; about 1.4 M references under lackey)
 * Buckets = n / 2 (chains of ~2), entries are 16-byte {key, payload, next}
 * structs in insertion order, heads point at the last inserted entry. Half the
 * probe keys are R keys, half are misses (which walk the whole chain). xorshift64
 * with a fixed seed. Part of jaxsys.sims.traces (papers/prefetch.md 3).
 */
#include <stdio.h>
#include <stdlib.h>

struct entry {
  int key;
  int payload;
  long next; /* index of the next entry of the chain, -1 at the end */
};

static unsigned long long state = 0x51afd6c3b2e4a817ULL;
static unsigned long long next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

static unsigned hash(int key, unsigned mask) { return ((unsigned)key * 2654435761u) >> 7 & mask; }

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 16384;
  if (n < 2) {
    fprintf(stderr, "hash_join: n must be >= 2, given %s\n", argv[1]);
    return 2;
  }
  unsigned nb = 1;
  while (nb < (unsigned)(n / 2)) nb <<= 1;
  int *r_keys = malloc(n * sizeof(int)), *s_keys = malloc(4 * n * sizeof(int));
  long *heads = malloc(nb * sizeof(long));
  struct entry *entries = malloc(n * sizeof(struct entry));
  if (!r_keys || !s_keys || !heads || !entries) return 3;
  for (long i = 0; i < n; i++) r_keys[i] = (int)(2 * i + 1); /* odd keys in R */
  for (long i = 0; i < 4 * n; i++) {
    long j = (long)(next() % (unsigned long long)n);
    s_keys[i] = (int)(2 * j + (next() & 1)); /* odd: a match, even: a miss */
  }
  for (unsigned b = 0; b < nb; b++) heads[b] = -1;
  for (long i = 0; i < n; i++) {
    unsigned b = hash(r_keys[i], nb - 1);
    entries[i].key = r_keys[i];
    entries[i].payload = (int)i;
    entries[i].next = heads[b];
    heads[b] = i;
  }
  long matches = 0, sum = 0;
  for (long i = 0; i < 4 * n; i++) {
    int key = s_keys[i];
    for (long e = heads[hash(key, nb - 1)]; e >= 0; e = entries[e].next) {
      if (entries[e].key == key) {
        matches++;
        sum += entries[e].payload;
        break;
      }
    }
  }
  printf("%ld %ld\n", matches, sum);
  return 0;
}
