/* nnl_data.c - deterministic synthetic datasets for the example models.
 *
 *   cc -O2 nnl_data.c -lm -o nnl_data
 *   ./nnl_data KIND ROWS SEED > data.csv
 *
 * One CSV row per sample, inputs first, then targets, no header.  The same
 * arguments give the same bytes on every machine: the generator has its own
 * random numbers (splitmix64) and prints with %.6g.
 *
 *   moons ROWS SEED          two interleaving half circles, noise 0.1:
 *                            x0, x1, label (0 or 1)
 *   shapes ROWS SEED         28x28 images of 10 kinds of shapes (bars,
 *                            diagonals, boxes, crosses, rings, discs) at
 *                            random places and sizes, with noise: 784
 *                            pixels in [0, 1], then a one-hot label (10)
 *   sine ROWS SEED           windows of a noisy sine wave (random phase and
 *                            frequency, noise 0.1): 12 values, then the 13th
 *   binadd ROWS SEED         two 8-bit numbers below 128, least significant
 *                            bit first, as pairs (a_t, b_t) for t = 0..7,
 *                            then the 8 bits of their sum
 *   reverse ROWS SEED        6 tokens in 0..7, then the same tokens reversed
 *   sort ROWS SEED           6 tokens in 0..7, then the same tokens sorted
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static uint64_t rng_state;

static uint64_t next_u64(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double uniform(void) {
  return (double)(next_u64() >> 11) * 0x1.0p-53;
}

static double normal(void) {
  double u = uniform(), v = uniform();
  return sqrt(-2.0 * log(1.0 - u)) * cos(2.0 * M_PI * v);
}

static int below(int n) {
  return (int)(uniform() * n);
}

static void moons(long rows) {
  for (long r = 0; r < rows; r++) {
    int label = r % 2;
    double t = M_PI * uniform();
    double x = label ? 1.0 - cos(t) : cos(t);
    double y = label ? 0.5 - sin(t) : sin(t);
    printf("%.6g,%.6g,%d\n", x + 0.1 * normal(), y + 0.1 * normal(), label);
  }
}

enum { SIDE = 28, KINDS = 10 };

static void plot(float *img, int x, int y) {
  if (x >= 0 && x < SIDE && y >= 0 && y < SIDE) img[y * SIDE + x] = 1.0f;
}

/* One shape of a kind, centred at (cx, cy) with half-size s. */
static void draw(float *img, int kind, int cx, int cy, int s) {
  for (int dy = -s; dy <= s; dy++)
    for (int dx = -s; dx <= s; dx++) {
      int ax = abs(dx), ay = abs(dy);
      double d = sqrt((double)(dx * dx + dy * dy));
      bool on = false;
      switch (kind) {
      case 0: on = ay <= 1; break;                                /* horizontal bar */
      case 1: on = ax <= 1; break;                                /* vertical bar */
      case 2: on = abs(dx - dy) <= 1; break;                      /* diagonal \ */
      case 3: on = abs(dx + dy) <= 1; break;                      /* diagonal / */
      case 4: on = ax == s || ay == s; break;                     /* box outline */
      case 5: on = true; break;                                   /* filled box */
      case 6: on = ax <= 1 || ay <= 1; break;                     /* plus */
      case 7: on = abs(dx - dy) <= 1 || abs(dx + dy) <= 1; break; /* cross */
      case 8: on = fabs(d - s) < 1.0; break;                      /* ring */
      case 9: on = d <= s; break;                                 /* disc */
      }
      if (on) plot(img, cx + dx, cy + dy);
    }
}

static void shapes(long rows) {
  float img[SIDE * SIDE];
  for (long r = 0; r < rows; r++) {
    int kind = (int)(r % KINDS);
    memset(img, 0, sizeof img);
    int s = 5 + below(5);
    int cx = s + 1 + below(SIDE - 2 * s - 2), cy = s + 1 + below(SIDE - 2 * s - 2);
    draw(img, kind, cx, cy, s);
    for (int i = 0; i < SIDE * SIDE; i++) {
      double v = img[i] + 0.1 * normal();
      printf("%.3g,", v < 0 ? 0 : v > 1 ? 1 : v);
    }
    for (int k = 0; k < KINDS; k++)
      printf("%d%c", k == kind, k == KINDS - 1 ? '\n' : ',');
  }
}

enum { WINDOW = 12 };

static void sine(long rows) {
  for (long r = 0; r < rows; r++) {
    double phase = 2 * M_PI * uniform(), freq = 0.2 + 0.3 * uniform();
    for (int t = 0; t <= WINDOW; t++)
      printf("%.6g%c", sin(phase + freq * t) + 0.1 * normal(), t == WINDOW ? '\n' : ',');
  }
}

enum { BITS = 8 };

static void binadd(long rows) {
  for (long r = 0; r < rows; r++) {
    int a = below(1 << (BITS - 1)), b = below(1 << (BITS - 1)), sum = a + b;
    for (int t = 0; t < BITS; t++)
      printf("%d,%d,", (a >> t) & 1, (b >> t) & 1);
    for (int t = 0; t < BITS; t++)
      printf("%d%c", (sum >> t) & 1, t == BITS - 1 ? '\n' : ',');
  }
}

enum { SEQ = 6, VOCAB = 8 };

static int compare_ints(const void *a, const void *b) {
  return *(const int *)a - *(const int *)b;
}

/* Token sequences, then the same reversed or sorted. */
static void sequences(long rows, bool sort) {
  int tok[SEQ], out[SEQ];
  for (long r = 0; r < rows; r++) {
    for (int t = 0; t < SEQ; t++) {
      tok[t] = below(VOCAB);
      out[SEQ - 1 - t] = tok[t];
      printf("%d,", tok[t]);
    }
    if (sort) qsort(out, SEQ, sizeof out[0], compare_ints);
    for (int t = 0; t < SEQ; t++)
      printf("%d%c", out[t], t == SEQ - 1 ? '\n' : ',');
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s moons|shapes|sine|binadd|reverse|sort ROWS SEED\n", argv[0]);
    return 2;
  }
  long rows = strtol(argv[2], NULL, 10);
  rng_state = strtoull(argv[3], NULL, 10) * 0x2545f4914f6cdd1dull + 1;
  const char *kind = argv[1];
  if (!strcmp(kind, "moons"))
    moons(rows);
  else if (!strcmp(kind, "shapes"))
    shapes(rows);
  else if (!strcmp(kind, "sine"))
    sine(rows);
  else if (!strcmp(kind, "binadd"))
    binadd(rows);
  else if (!strcmp(kind, "reverse") || !strcmp(kind, "sort"))
    sequences(rows, kind[0] == 's');
  else {
    fprintf(stderr, "%s: unknown dataset '%s'\n", argv[0], kind);
    return 2;
  }
  return 0;
}
