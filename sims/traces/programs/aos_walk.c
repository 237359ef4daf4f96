/* Array-of-structs field walks: the same region footprints reached in different orders.
 *
 * Usage: aos_walk [walks]   (default 12000; about 0.9 M references under lackey)
 * 4096 records of 256 bytes (4 cache blocks; fields a, b, c, d start blocks
 * 0..3), 4 KiB aligned, so a 4 KiB region holds 16 records. Each walk picks a
 * random run of 2 regions and one of four walkers:
 *   walk_ac: reads a then c of every record  -> region offsets 0, 2, 4, 6, ...
 *   walk_ca: reads c then a                  -> 2, 0, 6, 4, ...  (same footprint)
 *   walk_ad: reads a then d                  -> 0, 3, 4, 7, ...
 *   walk_da: reads d then a                  -> 3, 0, 7, 4, ...  (same footprint)
 * walk_ac and walk_ad share the trigger offset 0 but differ in the second
 * offset and in the footprint: the case Gaze's (trigger, second) key separates
 * and a trigger-offset key (PMP) mixes up. xorshift64 with a fixed seed.
 * Part of jaxsys.sims.traces (papers/prefetch.md 1.1, 3).
 */
#include <stdio.h>
#include <stdlib.h>

#define RECORDS 4096
#define PER_REGION 16

struct record {
  double a, pad_a[7];
  double b, pad_b[7];
  double c, pad_c[7];
  double d, pad_d[7];
};

static unsigned long long state = 0x6a09e667f3bcc909ULL;
static unsigned long long next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

/* Each walker reads through a volatile pointer, in separate statements, so the
   compiler keeps the two loads of a record in the order written. */
static double walk_ac(const volatile struct record *r, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) {
    double a = r[i].a;
    double c = r[i].c;
    s += a * c;
  }
  return s;
}
static double walk_ca(const volatile struct record *r, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) {
    double c = r[i].c;
    double a = r[i].a;
    s += c - a;
  }
  return s;
}
static double walk_ad(const volatile struct record *r, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) {
    double a = r[i].a;
    double d = r[i].d;
    s += a * d;
  }
  return s;
}
static double walk_da(const volatile struct record *r, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) {
    double d = r[i].d;
    double a = r[i].a;
    s += d - a;
  }
  return s;
}

int main(int argc, char **argv) {
  long walks = argc > 1 ? atol(argv[1]) : 12000;
  if (walks < 1) {
    fprintf(stderr, "aos_walk: walks must be >= 1, given %s\n", argv[1]);
    return 2;
  }
  struct record *recs = aligned_alloc(4096, RECORDS * sizeof(struct record));
  if (!recs) return 3;
  for (long i = 0; i < RECORDS; i++) {
    recs[i].a = (double)i;
    recs[i].b = 1.0;
    recs[i].c = (double)(i % 3);
    recs[i].d = (double)(i % 5);
  }
  double s = 0;
  long regions = RECORDS / PER_REGION;
  for (long w = 0; w < walks; w++) {
    long first = (long)(next() % (unsigned long long)(regions - 1));
    struct record *r = recs + first * PER_REGION;
    switch (next() % 4) {
      case 0: s += walk_ac(r, 2 * PER_REGION); break;
      case 1: s += walk_ca(r, 2 * PER_REGION); break;
      case 2: s += walk_ad(r, 2 * PER_REGION); break;
      default: s += walk_da(r, 2 * PER_REGION); break;
    }
  }
  printf("%f\n", s);
  return 0;
}
