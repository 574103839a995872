/* plot.h - line charts as SVG for training curves and learning-rate sweeps. */
#ifndef DLCC_PLOT_H
#define DLCC_PLOT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct PlotCurve {
  const char *label;
  const double *x, *y; /* n points; non-finite values are left out */
  int n;
  int color; /* index into the palette */
  bool dashed;
} PlotCurve;

typedef struct PlotPanel {
  const char *title, *xlabel, *ylabel;
  const PlotCurve *curves;
  int ncurves;
  bool xlog;     /* logarithmic x axis (learning rates) */
  bool xinteger; /* x ticks at whole numbers at least (epochs) */
  bool percent;  /* y values are fractions shown as percentages */
} PlotPanel;

/* Write the panels side by side into an SVG file; mark_x (if finite) draws
 * a dashed vertical line labelled mark_label in every panel.  false with a
 * message in err when the file cannot be written. */
bool plot_svg(const char *path, const char *title, const PlotPanel *panels, int npanels,
              double mark_x, const char *mark_label, char *err, size_t errlen);

#endif
