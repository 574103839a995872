/* plot.c - line charts as SVG, written by hand (no dependencies): panels
 * side by side, each with axes, ticks, labels and a legend, and an optional
 * marked x position (the early-stopping epoch). */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A colour-blind-safe palette (Okabe and Ito). */
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#F0E442"};
enum { NPALETTE = sizeof palette / sizeof palette[0] };

enum { PANEL_W = 460, PANEL_H = 340, MARGIN_L = 70, MARGIN_R = 20, MARGIN_T = 60, MARGIN_B = 50 };

static void put_escaped(FILE *f, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '&': fputs("&amp;", f); break;
    case '"': fputs("&quot;", f); break;
    default: fputc(*s, f);
    }
  }
}

/* "Nice" tick spacing: 1, 2 or 5 times a power of ten, about `want` ticks. */
static double nice_step(double span, int want) {
  double raw = span / want, mag = pow(10, floor(log10(raw))), r = raw / mag;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
}

typedef struct Axis {
  double lo, hi;
  bool log;
} Axis;

static double axis_pos(const Axis *a, double v) {
  if (a->log) return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
  return (v - a->lo) / (a->hi - a->lo);
}

static void format_tick(char *buf, size_t n, double v, bool percent) {
  if (percent)
    snprintf(buf, n, "%g%%", round(v * 1000) / 10);
  else
    snprintf(buf, n, "%g", fabs(v) < 1e-12 ? 0.0 : v);
}

/* The range of all finite values (positive ones on a log axis). */
static bool data_range(const PlotPanel *p, bool x, bool log, double *lo, double *hi) {
  *lo = INFINITY;
  *hi = -INFINITY;
  for (int c = 0; c < p->ncurves; c++)
    for (int i = 0; i < p->curves[c].n; i++) {
      double v = x ? p->curves[c].x[i] : p->curves[c].y[i];
      if (!isfinite(v) || (log && v <= 0)) continue;
      *lo = fmin(*lo, v);
      *hi = fmax(*hi, v);
    }
  return *lo <= *hi;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The median of the panel's finite y values (INFINITY when it has none). */
static double median_y(const PlotPanel *p) {
  int n = 0;
  for (int c = 0; c < p->ncurves; c++)
    n += p->curves[c].n;
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  int k = 0;
  for (int c = 0; c < p->ncurves; c++)
    for (int i = 0; i < p->curves[c].n; i++)
      if (isfinite(p->curves[c].y[i])) v[k++] = p->curves[c].y[i];
  qsort(v, (size_t)k, sizeof *v, compare_double);
  double m = k == 0 ? INFINITY : k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
  free(v);
  return m > 0 ? m : INFINITY;
}

static void panel_svg(FILE *f, const PlotPanel *p, double ox, double mark_x,
                      const char *mark_label) {
  double x0 = ox + MARGIN_L, x1 = ox + PANEL_W - MARGIN_R;
  double y0 = MARGIN_T + PANEL_H - MARGIN_B, y1 = MARGIN_T;
  Axis ax = {0, 1, p->xlog}, ay = {0, 1, false};
  if (!data_range(p, true, p->xlog, &ax.lo, &ax.hi)) ax = (Axis){1, 2, p->xlog};
  if (!data_range(p, false, false, &ay.lo, &ay.hi)) ay = (Axis){0, 1, false};
  /* A diverging curve (a learning rate far too large) would flatten all
   * the others: the range stops at 4 times the median value, and points
   * beyond it are drawn at the top. */
  if (!p->percent) ay.hi = fmin(ay.hi, 4 * median_y(p));
  if (p->percent) {
    ay.hi = fmin(1.0, ay.hi + 0.02);
    ay.lo = fmax(0.0, ay.lo - 0.02);
  } else if (ay.lo >= 0 && ay.lo < 0.5 * ay.hi) {
    ay.lo = 0; /* losses: start at 0 unless the curves live far from it */
  }
  if (ay.hi - ay.lo < 1e-12) ay.hi = ay.lo + (fabs(ay.lo) > 0 ? fabs(ay.lo) * 0.1 : 1);
  if (!p->xlog && ax.hi - ax.lo < 1e-12) ax.hi = ax.lo + 1;
  if (p->xlog && ax.hi / ax.lo < 1.0001) ax.hi = ax.lo * 10;
  double ystep = nice_step(ay.hi - ay.lo, 5);
  ay.lo = floor(ay.lo / ystep) * ystep;
  ay.hi = ceil(ay.hi / ystep - 1e-9) * ystep;
  if (p->percent && ay.hi > 1) ay.hi = 1;
#define PX(v) (x0 + (x1 - x0) * axis_pos(&ax, (v)))
#define PY(v) (y0 - (y0 - y1) * axis_pos(&ay, (v)))
  fprintf(f, "<g class=\"panel\">\n");
  fprintf(f, "<text class=\"title\" x=\"%.1f\" y=\"%d\" font-size=\"15\">", x0, MARGIN_T - 14);
  put_escaped(f, p->title);
  fprintf(f, "</text>\n");
  /* grid and y ticks */
  fprintf(f, "<g class=\"y-axis\" font-size=\"11\" text-anchor=\"end\">\n");
  for (double v = ay.lo; v <= ay.hi + ystep * 1e-6; v += ystep) {
    char label[32];
    format_tick(label, sizeof label, v, p->percent);
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
            x0, PY(v), x1, PY(v), x0 - 5, PY(v), x0, PY(v), x0 - 8, PY(v) + 4, label);
  }
  fprintf(f, "</g>\n<g class=\"x-axis\" font-size=\"11\" text-anchor=\"middle\">\n");
  if (p->xlog) {
    for (double e = floor(log10(ax.lo)); e <= ceil(log10(ax.hi)); e++) {
      double v = pow(10, e);
      if (v < ax.lo * 0.999 || v > ax.hi * 1.001) continue;
      fprintf(f,
              "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
              "<text x=\"%.1f\" y=\"%.1f\">%g</text>\n",
              PX(v), y0, PX(v), y0 + 5, PX(v), y0 + 18, v);
    }
  } else {
    double xstep = nice_step(ax.hi - ax.lo, 6);
    if (p->xinteger && xstep < 1) xstep = 1;
    for (double v = ceil(ax.lo / xstep) * xstep; v <= ax.hi + xstep * 1e-6; v += xstep)
      fprintf(f,
              "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
              "<text x=\"%.1f\" y=\"%.1f\">%g</text>\n",
              PX(v), y0, PX(v), y0 + 5, PX(v), y0 + 18, v);
  }
  fprintf(f, "</g>\n");
  /* axes and their labels */
  fprintf(
      f,
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n"
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
      x0, y0, x1, y0, x0, y0, x0, y1);
  fprintf(f,
          "<text class=\"xlabel\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">",
          (x0 + x1) / 2, y0 + 38);
  put_escaped(f, p->xlabel);
  fprintf(f,
          "</text>\n<text class=\"ylabel\" transform=\"translate(%.1f,%.1f) rotate(-90)\" "
          "text-anchor=\"middle\" font-size=\"13\">",
          ox + 18, (y0 + y1) / 2);
  put_escaped(f, p->ylabel);
  fprintf(f, "</text>\n");
  /* the marked position */
  if (isfinite(mark_x) && mark_x >= ax.lo && mark_x <= ax.hi) {
    /* The label sits above the plot area, away from the nearer edge. */
    bool right = axis_pos(&ax, mark_x) > 0.5;
    fprintf(f,
            "<g class=\"marker\"><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"#888\" stroke-dasharray=\"6,4\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" text-anchor=\"%s\">",
            PX(mark_x), y0, PX(mark_x), y1, PX(mark_x) + (right ? -4 : 4), y1 - 3,
            right ? "end" : "start");
    put_escaped(f, mark_label);
    fprintf(f, "</text></g>\n");
  }
  /* curves */
  for (int c = 0; c < p->ncurves; c++) {
    const PlotCurve *cv = &p->curves[c];
    const char *colour = palette[cv->color % NPALETTE];
    fprintf(f,
            "<polyline class=\"curve\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
            colour, cv->dashed ? " stroke-dasharray=\"5,3\"" : "");
    int npoints = 0;
    for (int i = 0; i < cv->n; i++) {
      if (!isfinite(cv->x[i]) || !isfinite(cv->y[i]) || (p->xlog && cv->x[i] <= 0)) continue;
      double y = fmin(fmax(cv->y[i], ay.lo), ay.hi);
      fprintf(f, "%s%.2f,%.2f", npoints++ ? " " : "", PX(cv->x[i]), PY(y));
    }
    fprintf(f, "\"/>\n");
    /* a single point would be invisible as a line */
    if (npoints == 1 || cv->n < 30)
      for (int i = 0; i < cv->n; i++)
        if (isfinite(cv->x[i]) && isfinite(cv->y[i]) && !(p->xlog && cv->x[i] <= 0))
          fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n", PX(cv->x[i]),
                  PY(fmin(fmax(cv->y[i], ay.lo), ay.hi)), colour);
  }
  /* The legend goes in a right-hand corner the curves leave free: the top
   * unless they end high there. */
  double high = 0;
  for (int c = 0; c < p->ncurves; c++)
    for (int i = 0; i < p->curves[c].n; i++) {
      double xv = p->curves[c].x[i], yv = p->curves[c].y[i];
      if (isfinite(xv) && isfinite(yv) && !(p->xlog && xv <= 0) && axis_pos(&ax, xv) > 0.55)
        high = fmax(high, axis_pos(&ay, yv));
    }
  double lheight = 8 + 16 * p->ncurves;
  double lx = x1 - 150, ly = high > 0.55 ? y0 - 8 - lheight : y1 + 8;
  fprintf(f,
          "<g class=\"legend\" font-size=\"11\"><rect x=\"%.1f\" y=\"%.1f\" width=\"145\" "
          "height=\"%.0f\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#bbb\"/>\n",
          lx, ly, lheight);
  for (int c = 0; c < p->ncurves; c++) {
    const PlotCurve *cv = &p->curves[c];
    double yy = ly + 14 + 16 * c;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"%s/><text x=\"%.1f\" y=\"%.1f\">",
            lx + 6, yy - 4, lx + 30, yy - 4, palette[cv->color % NPALETTE],
            cv->dashed ? " stroke-dasharray=\"5,3\"" : "", lx + 36, yy);
    put_escaped(f, cv->label);
    fprintf(f, "</text>\n");
  }
  fprintf(f, "</g>\n</g>\n");
#undef PX
#undef PY
}

bool plot_svg(const char *path, const char *title, const PlotPanel *panels, int npanels,
              double mark_x, const char *mark_label, char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (!f) {
    snprintf(err, errlen, "cannot write plot '%s': %s", path, strerror(errno));
    return false;
  }
  int width = PANEL_W * npanels, height = PANEL_H + MARGIN_T;
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
          "<text class=\"heading\" x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" "
          "font-weight=\"bold\">",
          width, height, width, height, width / 2);
  put_escaped(f, title);
  fprintf(f, "</text>\n");
  for (int i = 0; i < npanels; i++)
    panel_svg(f, &panels[i], (double)(PANEL_W * i), mark_x, mark_label);
  fprintf(f, "</svg>\n");
  if (fclose(f) != 0) {
    snprintf(err, errlen, "cannot write plot '%s': %s", path, strerror(errno));
    return false;
  }
  return true;
}
