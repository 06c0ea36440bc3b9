# figures/06-curves.gp: chapter 6, the runs of chapters 04 and 05 epoch by epoch, four figures.
#   gnuplot -c figures/06-curves.gp results/06-comparison.curves.dat FIGURES_DIR
# writes FIGURES_DIR/06-val-acc.pdf, 06-val-loss.pdf, 06-lr.pdf and 06-seconds.pdf. The data file
# (written by build/06-comparison) holds one block per run, separated by two blank lines, whose
# first line is the run's title followed by the column names:
#   "title" train_loss val_loss val_acc lr seconds
# and whose data lines have the same six columns (column 1: the epoch).
if (ARGC < 2) { print "usage: gnuplot -c figures/06-curves.gp CURVES.dat FIGURES_DIR"; exit status 2 }
data = ARG1
set terminal pdfcairo size 14cm,8.5cm font "DejaVu Sans,10" linewidth 1.5
set key bottom right box opaque
set grid
set xlabel "epoch"
set xtics 1 nomirror
set mxtics 1
# integer epochs only; few epochs get a tick each, many a tick every 5
stats data using 1 nooutput
if (STATS_max > 15) { set xtics 5 }
set xrange [0.5:STATS_max + 0.5]

set output ARG2."/06-val-acc.pdf"
set ylabel "validation accuracy"
# a flat line (a run that learnt nothing) gets a range around it instead of a gnuplot warning
stats data using 4 nooutput
if (STATS_max - STATS_min < 1e-3) { set yrange [STATS_min - 0.05:STATS_max + 0.05] }
plot for [i=0:*] data index i using 1:4 with linespoints pointtype 7 pointsize 0.5 title columnheader(1)

set output ARG2."/06-val-loss.pdf"
set ylabel "validation loss (per image)"
set autoscale y
set key top right
plot for [i=0:*] data index i using 1:3 with linespoints pointtype 7 pointsize 0.5 title columnheader(1)

# the learning rate holds for a whole epoch and drops between epochs: steps, on a log scale;
set output ARG2."/06-lr.pdf"
set ylabel "learning rate"
set logscale y
set format y "10^{%L}"
set offsets 0, 0, graph 0.08, graph 0.08
# one horizontal segment per epoch, from its start to its end
plot for [i=0:*] data index i using ($1 - 0.5):5:(1):(0) with vectors nohead linewidth 2 title columnheader(1)
set offsets 0, 0, 0, 0

set output ARG2."/06-seconds.pdf"
set ylabel "seconds per epoch (log scale)"
set format y "%g"
set key top right
# the log keeps milliseconds: an epoch on cached features of a small set may read 0; drawn at 1 ms
plot for [i=0:*] data index i using 1:($6 < 0.001 ? 0.001 : $6) with linespoints pointtype 7 \
  pointsize 0.5 title columnheader(1)
