/* rt_safetensors.c - checkpoints in the safetensors format.
 *
 * A file is an 8-byte little-endian header length, a JSON header
 *   {"h1.W":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},...,
 *    "__metadata__":{"format":"dlcc"}}
 * padded with spaces to a multiple of 8 bytes, then the raw little-endian
 * tensor data; data_offsets are relative to the end of the header and must
 * cover the data section exactly, with no gaps or overlaps.
 *
 * The reader trusts nothing in the file: the header is parsed by a small
 * strict JSON parser that knows the schema, every length and offset is
 * checked against the file size before anything is allocated or read, and a
 * malformed file gets a message naming the file and what is wrong. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The safetensors specification caps the header at 100 MB. */
#define ST_MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)

static bool host_is_little_endian(void) {
  const uint32_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

static void swap_float_bytes(float *values, int64_t count) {
  for (int64_t k = 0; k < count; k++) {
    unsigned char b[4], r[4];
    memcpy(b, &values[k], 4);
    r[0] = b[3];
    r[1] = b[2];
    r[2] = b[1];
    r[3] = b[0];
    memcpy(&values[k], r, 4);
  }
}

/* Whether s[0..len) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int extra;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (len - i <= (size_t)extra) return false;
    for (int k = 1; k <= extra; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += (size_t)extra + 1;
  }
  return true;
}

/* ---- the header parser --------------------------------------------------- */

typedef struct StEntry {
  char *name;
  char *dtype;
  int rank;
  int64_t dims[DLRT_MAX_RANK];
  int64_t begin, end;
  bool has_dtype, has_shape, has_offsets;
} StEntry;

typedef struct StParser {
  const char *path;
  const char *text; /* the header, not NUL-terminated */
  size_t len, pos;
  DlrtError *err;
  StEntry *entries;
  int nentries, cap;
  DlrtStMeta *meta; /* "__metadata__" */
  int nmeta, meta_cap;
} StParser;

static int parse_error(StParser *p, const char *what) {
  /* Offsets count from the start of the file: 8 bytes of length first. */
  return dlrt_fail(p->err, "%s: malformed safetensors header at byte %zu: %s", p->path, p->pos + 8,
                   what);
}

static void skip_space(StParser *p) {
  while (p->pos < p->len) {
    char c = p->text[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

/* Skip spaces, then consume `c` or fail with a message naming it. */
static int expect_char(StParser *p, char c) {
  skip_space(p);
  if (p->pos >= p->len || p->text[p->pos] != c) {
    char what[48];
    snprintf(what, sizeof what, "expected '%c'%s", c, p->pos >= p->len ? ", found the end" : "");
    return parse_error(p, what);
  }
  p->pos++;
  return 0;
}

/* Consume `c` if it is next (after spaces). */
static bool accept_char(StParser *p, char c) {
  skip_space(p);
  if (p->pos < p->len && p->text[p->pos] == c) {
    p->pos++;
    return true;
  }
  return false;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Four hex digits after "\u". */
static int parse_hex4(StParser *p, uint32_t *out) {
  if (p->len - p->pos < 4) return parse_error(p, "truncated \\u escape");
  uint32_t value = 0;
  for (int k = 0; k < 4; k++) {
    int digit = hex_digit(p->text[p->pos + (size_t)k]);
    if (digit < 0) return parse_error(p, "bad \\u escape");
    value = value * 16 + (uint32_t)digit;
  }
  p->pos += 4;
  *out = value;
  return 0;
}

static size_t put_utf8(char *dst, uint32_t cp) {
  if (cp < 0x80) {
    dst[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    dst[0] = (char)(0xc0 | (cp >> 6));
    dst[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    dst[0] = (char)(0xe0 | (cp >> 12));
    dst[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    dst[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  dst[0] = (char)(0xf0 | (cp >> 18));
  dst[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  dst[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  dst[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* A JSON string into a new NUL-terminated buffer (*out, malloc'd). */
static int parse_string(StParser *p, char **out) {
  *out = NULL;
  if (expect_char(p, '"') != 0) return -1;
  /* An escape never produces more bytes than it occupies, so the rest of the
   * header bounds the decoded length. */
  char *buf = malloc(p->len - p->pos + 1);
  if (!buf) return dlrt_fail(p->err, "%s: out of memory reading the header", p->path);
  size_t used = 0;
  for (;;) {
    if (p->pos >= p->len) {
      free(buf);
      return parse_error(p, "unterminated string");
    }
    unsigned char c = (unsigned char)p->text[p->pos];
    if (c == '"') {
      p->pos++;
      break;
    }
    if (c < 0x20) {
      free(buf);
      return parse_error(p, "control character in string");
    }
    if (c != '\\') {
      buf[used++] = (char)c;
      p->pos++;
      continue;
    }
    p->pos++;
    if (p->pos >= p->len) {
      free(buf);
      return parse_error(p, "unterminated string");
    }
    char e = p->text[p->pos++];
    uint32_t cp;
    switch (e) {
    case '"': buf[used++] = '"'; break;
    case '\\': buf[used++] = '\\'; break;
    case '/': buf[used++] = '/'; break;
    case 'b': buf[used++] = '\b'; break;
    case 'f': buf[used++] = '\f'; break;
    case 'n': buf[used++] = '\n'; break;
    case 'r': buf[used++] = '\r'; break;
    case 't': buf[used++] = '\t'; break;
    case 'u':
      if (parse_hex4(p, &cp) != 0) {
        free(buf);
        return -1;
      }
      if (cp >= 0xd800 && cp <= 0xdbff) {
        uint32_t low;
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
          free(buf);
          return parse_error(p, "unpaired surrogate in \\u escape");
        }
        p->pos += 2;
        if (parse_hex4(p, &low) != 0) {
          free(buf);
          return -1;
        }
        if (low < 0xdc00 || low > 0xdfff) {
          free(buf);
          return parse_error(p, "unpaired surrogate in \\u escape");
        }
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        free(buf);
        return parse_error(p, "unpaired surrogate in \\u escape");
      }
      if (cp == 0) {
        free(buf);
        return parse_error(p, "\\u0000 in a string");
      }
      used += put_utf8(buf + used, cp);
      break;
    default: free(buf); return parse_error(p, "bad escape in string");
    }
  }
  buf[used] = '\0';
  if (!utf8_valid((const unsigned char *)buf, used)) {
    free(buf);
    return parse_error(p, "string is not valid utf-8");
  }
  *out = buf;
  return 0;
}

/* A non-negative JSON integer: no sign, fraction, exponent or leading zero. */
static int parse_count(StParser *p, int64_t *out) {
  skip_space(p);
  size_t start = p->pos;
  int64_t value = 0;
  while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') {
    int digit = p->text[p->pos] - '0';
    if (value > (INT64_MAX - digit) / 10) return parse_error(p, "integer too large");
    value = value * 10 + digit;
    p->pos++;
  }
  if (p->pos == start) return parse_error(p, "expected a non-negative integer");
  if (p->pos - start > 1 && p->text[start] == '0')
    return parse_error(p, "integer with a leading zero");
  if (p->pos < p->len &&
      (p->text[p->pos] == '.' || p->text[p->pos] == 'e' || p->text[p->pos] == 'E'))
    return parse_error(p, "expected a non-negative integer");
  *out = value;
  return 0;
}

/* [n, n, ...] with at most `max` elements. */
static int parse_count_array(StParser *p, int64_t *values, int max, int *count,
                             const char *too_many) {
  *count = 0;
  if (expect_char(p, '[') != 0) return -1;
  if (accept_char(p, ']')) return 0;
  do {
    if (*count >= max) return parse_error(p, too_many);
    if (parse_count(p, &values[*count]) != 0) return -1;
    (*count)++;
  } while (accept_char(p, ','));
  return expect_char(p, ']');
}

static int parse_metadata(StParser *p) {
  if (expect_char(p, '{') != 0) return -1;
  if (accept_char(p, '}')) return 0;
  do {
    char *key = NULL, *value = NULL;
    if (parse_string(p, &key) != 0) return -1;
    int rc = expect_char(p, ':');
    if (rc == 0) rc = parse_string(p, &value);
    for (int i = 0; rc == 0 && i < p->nmeta; i++)
      if (strcmp(p->meta[i].key, key) == 0)
        rc = dlrt_fail(p->err, "%s: metadata key '%s' appears twice", p->path, key);
    if (rc == 0 && p->nmeta == p->meta_cap) {
      int cap = p->meta_cap ? p->meta_cap * 2 : 8;
      DlrtStMeta *grown = realloc(p->meta, sizeof *grown * (size_t)cap);
      if (!grown)
        rc = dlrt_fail(p->err, "%s: out of memory reading the header", p->path);
      else {
        p->meta = grown;
        p->meta_cap = cap;
      }
    }
    if (rc != 0) {
      free(key);
      free(value);
      return -1;
    }
    p->meta[p->nmeta++] = (DlrtStMeta){key, value};
  } while (accept_char(p, ','));
  return expect_char(p, '}');
}

static int parse_tensor(StParser *p, StEntry *e) {
  if (expect_char(p, '{') != 0) return -1;
  if (!accept_char(p, '}')) {
    do {
      char *key = NULL;
      if (parse_string(p, &key) != 0 || expect_char(p, ':') != 0) {
        free(key);
        return -1;
      }
      int rc;
      bool duplicate = false;
      if (strcmp(key, "dtype") == 0) {
        duplicate = e->has_dtype;
        e->has_dtype = true;
        free(e->dtype);
        rc = parse_string(p, &e->dtype);
      } else if (strcmp(key, "shape") == 0) {
        duplicate = e->has_shape;
        e->has_shape = true;
        rc = parse_count_array(p, e->dims, DLRT_MAX_RANK, &e->rank,
                               "shape has more dimensions than the runtime supports (6)");
      } else if (strcmp(key, "data_offsets") == 0) {
        int64_t offsets[2];
        int count = 0;
        duplicate = e->has_offsets;
        e->has_offsets = true;
        rc = parse_count_array(p, offsets, 2, &count, "data_offsets needs exactly 2 numbers");
        if (rc == 0 && count != 2) rc = parse_error(p, "data_offsets needs exactly 2 numbers");
        e->begin = offsets[0];
        e->end = count == 2 ? offsets[1] : 0;
      } else {
        char what[200];
        snprintf(what, sizeof what, "unexpected key '%.100s' in tensor '%.40s'", key, e->name);
        rc = parse_error(p, what);
      }
      if (rc == 0 && duplicate) {
        char what[200];
        snprintf(what, sizeof what, "key '%.100s' appears twice in tensor '%.40s'", key, e->name);
        rc = parse_error(p, what);
      }
      free(key);
      if (rc != 0) return -1;
    } while (accept_char(p, ','));
    if (expect_char(p, '}') != 0) return -1;
  }
  const char *missing = !e->has_dtype     ? "dtype"
                        : !e->has_shape   ? "shape"
                        : !e->has_offsets ? "data_offsets"
                                          : NULL;
  if (missing)
    return dlrt_fail(p->err, "%s: tensor '%s' has no '%s' in the safetensors header", p->path,
                     e->name, missing);
  return 0;
}

static void free_meta(DlrtStMeta *meta, int nmeta) {
  for (int i = 0; i < nmeta; i++) {
    free(meta[i].key);
    free(meta[i].value);
  }
  free(meta);
}

static void free_entries(StParser *p) {
  for (int i = 0; i < p->nentries; i++) {
    free(p->entries[i].name);
    free(p->entries[i].dtype);
  }
  free(p->entries);
  p->entries = NULL;
  p->nentries = p->cap = 0;
  free_meta(p->meta, p->nmeta);
  p->meta = NULL;
  p->nmeta = p->meta_cap = 0;
}

static int parse_header(StParser *p) {
  skip_space(p);
  if (p->pos >= p->len || p->text[p->pos] != '{')
    return dlrt_fail(p->err, "%s: not a safetensors file (the header does not start with '{')",
                     p->path);
  p->pos++;
  bool seen_metadata = false;
  if (!accept_char(p, '}')) {
    do {
      char *key = NULL;
      if (parse_string(p, &key) != 0) return -1;
      if (expect_char(p, ':') != 0) {
        free(key);
        return -1;
      }
      if (strcmp(key, "__metadata__") == 0) {
        free(key);
        if (seen_metadata) return parse_error(p, "__metadata__ appears twice");
        seen_metadata = true;
        if (parse_metadata(p) != 0) return -1;
        continue;
      }
      for (int i = 0; i < p->nentries; i++) {
        if (strcmp(p->entries[i].name, key) == 0) {
          int rc = dlrt_fail(p->err, "%s: tensor '%s' appears twice in the safetensors header",
                             p->path, key);
          free(key);
          return rc;
        }
      }
      if (p->nentries == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        StEntry *grown = realloc(p->entries, sizeof *grown * (size_t)cap);
        if (!grown) {
          free(key);
          return dlrt_fail(p->err, "%s: out of memory reading the header", p->path);
        }
        p->entries = grown;
        p->cap = cap;
      }
      StEntry *e = &p->entries[p->nentries++];
      memset(e, 0, sizeof *e);
      e->name = key;
      if (parse_tensor(p, e) != 0) return -1;
    } while (accept_char(p, ','));
    if (expect_char(p, '}') != 0) return -1;
  }
  skip_space(p);
  if (p->pos != p->len) return parse_error(p, "unexpected characters after the header object");
  return 0;
}

/* ---- reading --------------------------------------------------------------- */

static int compare_entry_begin(const void *a, const void *b) {
  const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Check every entry against the schema and the data section's size; on
 * success `order` lists the entries by position in the file. */
static int check_entries(StParser *p, int64_t data_bytes, StEntry **order) {
  for (int i = 0; i < p->nentries; i++) {
    StEntry *e = &p->entries[i];
    if (strcmp(e->dtype, "F32") != 0)
      return dlrt_fail(p->err, "%s: tensor '%s' has dtype %s; only F32 is supported", p->path,
                       e->name, e->dtype);
    int64_t numel = 1;
    for (int d = 0; d < e->rank; d++) {
      if (e->dims[d] != 0 && numel > INT64_MAX / 4 / e->dims[d])
        return dlrt_fail(p->err, "%s: tensor '%s' has a shape too large to address", p->path,
                         e->name);
      numel *= e->dims[d];
    }
    char shape[128];
    if (e->end < e->begin)
      return dlrt_fail(p->err,
                       "%s: tensor '%s' has data_offsets [%lld, %lld] that end before "
                       "they begin",
                       p->path, e->name, (long long)e->begin, (long long)e->end);
    if (e->end - e->begin != numel * 4)
      return dlrt_fail(p->err,
                       "%s: tensor '%s' of shape %s needs %lld bytes, its data_offsets span %lld",
                       p->path, e->name, dlrt_format_dims(shape, sizeof shape, e->dims, e->rank),
                       (long long)(numel * 4), (long long)(e->end - e->begin));
    if (e->end > data_bytes)
      return dlrt_fail(p->err,
                       "%s: tensor '%s' data ends at byte %lld of a %lld-byte data section: the "
                       "file is truncated",
                       p->path, e->name, (long long)e->end, (long long)data_bytes);
    order[i] = e;
  }
  qsort(order, (size_t)p->nentries, sizeof *order, compare_entry_begin);
  int64_t expected = 0;
  for (int i = 0; i < p->nentries; i++) {
    if (order[i]->begin != expected)
      return dlrt_fail(p->err,
                       "%s: tensor '%s' data starts at byte %lld, expected %lld (tensor "
                       "data must not overlap or leave gaps)",
                       p->path, order[i]->name, (long long)order[i]->begin, (long long)expected);
    expected = order[i]->end;
  }
  if (expected != data_bytes)
    return dlrt_fail(p->err, "%s: %lld bytes of data follow the last tensor", p->path,
                     (long long)(data_bytes - expected));
  return 0;
}

static int read_exact(FILE *f, void *dst, size_t bytes) {
  return fread(dst, 1, bytes, f) == bytes ? 0 : -1;
}

/* The body of dlrt_safetensors_read once the file is open. */
static int read_open_file(const char *path, FILE *f, DlrtStFile *out, DlrtError *err) {
  struct stat st;
  if (fstat(fileno(f), &st) != 0)
    return dlrt_fail(err, "cannot read '%s': %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return dlrt_fail(err, "'%s' is not a regular file", path);
  int64_t file_bytes = (int64_t)st.st_size;
  unsigned char length_bytes[8];
  if (file_bytes < 8 || read_exact(f, length_bytes, 8) != 0)
    return dlrt_fail(err, "%s: file is too short to be safetensors (%lld bytes)", path,
                     (long long)file_bytes);
  uint64_t header_bytes = 0;
  for (int k = 7; k >= 0; k--)
    header_bytes = header_bytes << 8 | length_bytes[k];
  if (header_bytes > ST_MAX_HEADER_BYTES || header_bytes > (uint64_t)(file_bytes - 8))
    return dlrt_fail(err,
                     "%s: header length %llu does not fit in the file (%lld bytes): not a "
                     "safetensors file, or a truncated one",
                     path, (unsigned long long)header_bytes, (long long)file_bytes);
  char *header = malloc(header_bytes ? (size_t)header_bytes : 1);
  if (!header) return dlrt_fail(err, "%s: out of memory reading the header", path);
  if (read_exact(f, header, (size_t)header_bytes) != 0) {
    free(header);
    return dlrt_fail(err, "cannot read '%s': %s", path, ferror(f) ? strerror(errno) : "short read");
  }
  StParser p = {.path = path, .text = header, .len = (size_t)header_bytes, .err = err};
  int rc = parse_header(&p);
  free(header);
  StEntry **order = NULL;
  if (rc == 0) {
    order = malloc(sizeof *order * (size_t)(p.nentries ? p.nentries : 1));
    rc = order ? check_entries(&p, file_bytes - 8 - (int64_t)header_bytes, order)
               : dlrt_fail(err, "%s: out of memory reading the header", path);
  }
  DlrtStTensor *tensors = NULL;
  if (rc == 0) {
    tensors = calloc((size_t)(p.nentries ? p.nentries : 1), sizeof *tensors);
    if (!tensors) rc = dlrt_fail(err, "%s: out of memory", path);
  }
  /* The data section is read front to back in file order; entries keep the
   * header's order in the result. */
  for (int k = 0; rc == 0 && k < p.nentries; k++) {
    StEntry *e = order[k];
    DlrtStTensor *t = &tensors[e - p.entries];
    int64_t numel = (e->end - e->begin) / 4;
    t->data = malloc(numel ? (size_t)numel * sizeof(float) : 1);
    if (!t->data) {
      rc = dlrt_fail(err, "%s: out of memory for tensor '%s'", path, e->name);
      break;
    }
    if (read_exact(f, t->data, (size_t)numel * sizeof(float)) != 0) {
      rc = dlrt_fail(err, "cannot read '%s': %s", path, ferror(f) ? strerror(errno) : "short read");
      break;
    }
    if (!host_is_little_endian()) swap_float_bytes(t->data, numel);
    t->numel = numel;
    t->rank = e->rank;
    memcpy(t->dims, e->dims, sizeof t->dims);
  }
  if (rc == 0) {
    for (int i = 0; i < p.nentries; i++) {
      tensors[i].name = p.entries[i].name;
      p.entries[i].name = NULL; /* now owned by the result */
    }
    out->ntensors = p.nentries;
    out->tensors = tensors;
    tensors = NULL;
    out->nmeta = p.nmeta;
    out->meta = p.meta;
    p.meta = NULL; /* now owned by the result */
    p.nmeta = 0;
  }
  if (tensors) {
    for (int i = 0; i < p.nentries; i++)
      free(tensors[i].data);
    free(tensors);
  }
  free(order);
  free_entries(&p);
  return rc;
}

int dlrt_safetensors_read(const char *path, DlrtStFile *out, DlrtError *err) {
  if (!out) return dlrt_fail(err, "no output given for reading a safetensors file");
  memset(out, 0, sizeof *out);
  if (!path) return dlrt_fail(err, "no safetensors path given");
  FILE *f = fopen(path, "rb");
  if (!f) return dlrt_fail(err, "cannot open safetensors file '%s': %s", path, strerror(errno));
  int rc = read_open_file(path, f, out, err);
  fclose(f);
  return rc;
}

void dlrt_safetensors_free(DlrtStFile *f) {
  if (!f) return;
  for (int i = 0; i < f->ntensors; i++) {
    free(f->tensors[i].name);
    free(f->tensors[i].data);
  }
  free(f->tensors);
  f->tensors = NULL;
  f->ntensors = 0;
  free_meta(f->meta, f->nmeta);
  f->meta = NULL;
  f->nmeta = 0;
}

const char *dlrt_safetensors_meta(const DlrtStFile *f, const char *key) {
  for (int i = 0; f && key && i < f->nmeta; i++)
    if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
  return NULL;
}

/* ---- writing --------------------------------------------------------------- */

typedef struct StBuf {
  char *text;
  size_t len, cap;
  bool failed; /* out of memory */
} StBuf;

static void buf_append(StBuf *b, const char *s, size_t n) {
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *grown = realloc(b->text, cap);
    if (!grown) {
      b->failed = true;
      return;
    }
    b->text = grown;
    b->cap = cap;
  }
  memcpy(b->text + b->len, s, n);
  b->len += n;
  b->text[b->len] = '\0';
}

static void buf_puts(StBuf *b, const char *s) {
  buf_append(b, s, strlen(s));
}

static void buf_put_int(StBuf *b, int64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  buf_append(b, tmp, (size_t)n);
}

static void buf_put_json_string(StBuf *b, const char *s) {
  buf_puts(b, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      char esc[2] = {'\\', (char)*c};
      buf_append(b, esc, 2);
    } else if (*c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      buf_append(b, esc, 6);
    } else {
      buf_append(b, (const char *)c, 1);
    }
  }
  buf_puts(b, "\"");
}

static int write_all(int fd, const void *data, size_t bytes) {
  const char *p = data;
  while (bytes > 0) {
    ssize_t n = write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    bytes -= (size_t)n;
  }
  return 0;
}

static int check_tensors_for_write(const char *path, const DlrtStTensor *tensors, int ntensors,
                                   DlrtError *err) {
  for (int i = 0; i < ntensors; i++) {
    const DlrtStTensor *t = &tensors[i];
    if (!t->name || !t->name[0]) return dlrt_fail(err, "%s: tensor %d has no name", path, i);
    if (strcmp(t->name, "__metadata__") == 0)
      return dlrt_fail(err, "%s: '__metadata__' is reserved and cannot name a tensor", path);
    if (!utf8_valid((const unsigned char *)t->name, strlen(t->name)))
      return dlrt_fail(err, "%s: tensor name '%s' is not valid utf-8", path, t->name);
    for (int j = 0; j < i; j++)
      if (strcmp(tensors[j].name, t->name) == 0)
        return dlrt_fail(err, "%s: tensor '%s' is given twice", path, t->name);
    if (t->rank < 0 || t->rank > DLRT_MAX_RANK)
      return dlrt_fail(err, "%s: tensor '%s' has rank %d; the runtime supports 0 to %d", path,
                       t->name, t->rank, DLRT_MAX_RANK);
    int64_t numel = 1;
    for (int d = 0; d < t->rank; d++) {
      if (t->dims[d] < 0 || (t->dims[d] != 0 && numel > INT64_MAX / 4 / t->dims[d]))
        return dlrt_fail(err, "%s: tensor '%s' has an invalid shape", path, t->name);
      numel *= t->dims[d];
    }
    if (numel != t->numel) {
      char shape[128];
      return dlrt_fail(err, "%s: tensor '%s' has %lld elements but shape %s", path, t->name,
                       (long long)t->numel,
                       dlrt_format_dims(shape, sizeof shape, t->dims, t->rank));
    }
    if (numel > 0 && !t->data) return dlrt_fail(err, "%s: tensor '%s' has no data", path, t->name);
  }
  return 0;
}

static void build_header(StBuf *b, const DlrtStTensor *tensors, int ntensors,
                         const DlrtStMeta *meta, int nmeta) {
  int64_t offset = 0;
  buf_puts(b, "{");
  for (int i = 0; i < ntensors; i++) {
    const DlrtStTensor *t = &tensors[i];
    buf_put_json_string(b, t->name);
    buf_puts(b, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < t->rank; d++) {
      if (d) buf_puts(b, ",");
      buf_put_int(b, t->dims[d]);
    }
    buf_puts(b, "],\"data_offsets\":[");
    buf_put_int(b, offset);
    buf_puts(b, ",");
    offset += t->numel * 4;
    buf_put_int(b, offset);
    buf_puts(b, "]},");
  }
  buf_puts(b, "\"__metadata__\":{\"format\":\"dlcc\"");
  for (int i = 0; i < nmeta; i++) {
    buf_puts(b, ",");
    buf_put_json_string(b, meta[i].key);
    buf_puts(b, ":");
    buf_put_json_string(b, meta[i].value);
  }
  buf_puts(b, "}}");
  /* Pad so that the data section starts 8-byte aligned. */
  while (!b->failed && b->len % 8 != 0)
    buf_puts(b, " ");
}

/* Write the length, header and data to fd. */
static int write_contents(int fd, const StBuf *header, const DlrtStTensor *tensors, int ntensors) {
  unsigned char length_bytes[8];
  uint64_t length = header->len;
  for (int k = 0; k < 8; k++)
    length_bytes[k] = (unsigned char)(length >> (8 * k));
  if (write_all(fd, length_bytes, 8) != 0 || write_all(fd, header->text, header->len) != 0)
    return -1;
  bool little = host_is_little_endian();
  for (int i = 0; i < ntensors; i++) {
    const DlrtStTensor *t = &tensors[i];
    if (little) {
      if (write_all(fd, t->data, (size_t)t->numel * sizeof(float)) != 0) return -1;
      continue;
    }
    float chunk[1024];
    for (int64_t k = 0; k < t->numel; k += 1024) {
      int64_t count = t->numel - k < 1024 ? t->numel - k : 1024;
      memcpy(chunk, t->data + k, (size_t)count * sizeof(float));
      swap_float_bytes(chunk, count);
      if (write_all(fd, chunk, (size_t)count * sizeof(float)) != 0) return -1;
    }
  }
  return 0;
}

/* Make the rename durable.  Best effort: some file systems cannot fsync a
 * directory, and the checkpoint itself is already complete on disk. */
static void sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  if (!dir) return;
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

static int check_meta_for_write(const char *path, const DlrtStMeta *meta, int nmeta,
                                DlrtError *err) {
  if (nmeta < 0 || (nmeta > 0 && !meta)) return dlrt_fail(err, "%s: invalid metadata list", path);
  for (int i = 0; i < nmeta; i++) {
    const DlrtStMeta *m = &meta[i];
    if (!m->key || !m->value) return dlrt_fail(err, "%s: metadata entry %d is incomplete", path, i);
    if (!utf8_valid((const unsigned char *)m->key, strlen(m->key)) ||
        !utf8_valid((const unsigned char *)m->value, strlen(m->value)))
      return dlrt_fail(err, "%s: metadata entry '%s' is not valid utf-8", path, m->key);
    if (strcmp(m->key, "format") == 0)
      return dlrt_fail(err, "%s: metadata key 'format' is reserved", path);
    for (int j = 0; j < i; j++)
      if (strcmp(meta[j].key, m->key) == 0)
        return dlrt_fail(err, "%s: metadata key '%s' is given twice", path, m->key);
  }
  return 0;
}

int dlrt_safetensors_write(const char *path, const DlrtStTensor *tensors, int ntensors,
                           DlrtError *err) {
  return dlrt_safetensors_write_meta(path, tensors, ntensors, NULL, 0, err);
}

int dlrt_safetensors_write_meta(const char *path, const DlrtStTensor *tensors, int ntensors,
                                const DlrtStMeta *meta, int nmeta, DlrtError *err) {
  if (!path) return dlrt_fail(err, "no safetensors path given");
  if (ntensors < 0 || (ntensors > 0 && !tensors))
    return dlrt_fail(err, "%s: invalid tensor list", path);
  if (check_tensors_for_write(path, tensors, ntensors, err) != 0) return -1;
  if (check_meta_for_write(path, meta, nmeta, err) != 0) return -1;
  StBuf header = {0};
  build_header(&header, tensors, ntensors, meta, nmeta);
  if (header.failed) {
    free(header.text);
    return dlrt_fail(err, "%s: out of memory building the header", path);
  }
  size_t path_len = strlen(path);
  char *tmp = malloc(path_len + sizeof ".tmp.XXXXXX");
  if (!tmp) {
    free(header.text);
    return dlrt_fail(err, "%s: out of memory", path);
  }
  memcpy(tmp, path, path_len);
  memcpy(tmp + path_len, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
  int fd = mkstemp(tmp);
  if (fd < 0) {
    int rc = dlrt_fail(err, "cannot create temporary file '%s': %s", tmp, strerror(errno));
    free(tmp);
    free(header.text);
    return rc;
  }
  /* mkstemp makes the file private (0600); a checkpoint is an ordinary
   * file. */
  int rc = 0;
  if (fchmod(fd, 0644) != 0 || write_contents(fd, &header, tensors, ntensors) != 0 ||
      fsync(fd) != 0)
    rc = dlrt_fail(err, "cannot write '%s': %s", tmp, strerror(errno));
  if (close(fd) != 0 && rc == 0) rc = dlrt_fail(err, "cannot write '%s': %s", tmp, strerror(errno));
  if (rc == 0 && rename(tmp, path) != 0)
    rc = dlrt_fail(err, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
  if (rc != 0)
    unlink(tmp);
  else
    sync_parent_dir(path);
  free(tmp);
  free(header.text);
  return rc;
}
