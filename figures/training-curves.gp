# figures/training-curves.gp: chapters 4 and 5, one run's training curves: the training and
# validation losses (left) and the validation accuracy (right), epoch by epoch.
#   gnuplot -c figures/training-curves.gp results/NN-name.csv OUT.pdf "TITLE"
# The CSV is a chapter program's log: epoch,train_loss,val_loss,val_acc,lr,seconds.
if (ARGC < 3) { print "usage: gnuplot -c figures/training-curves.gp RUN.csv OUT.pdf TITLE"; exit status 2 }
set terminal pdfcairo size 16cm,6.5cm font "DejaVu Sans,9" linewidth 1.5
set output ARG2
set datafile separator ","
stats ARG1 using 1 nooutput
set xrange [0.5:STATS_max + 0.5]
set xtics 1 nomirror
if (STATS_max > 15) { set xtics 5 }
set xlabel "epoch"
set grid
set multiplot layout 1,2 title ARG3 font ",10"
set ylabel "loss (per image)"
set key top right
plot ARG1 using 1:2 with linespoints pointtype 7 pointsize 0.4 title "training", \
     ARG1 using 1:3 with linespoints pointtype 7 pointsize 0.4 title "validation"
set ylabel "validation accuracy"
# a flat line (a run that learnt nothing) gets a range around it instead of a gnuplot warning
stats ARG1 using 4 nooutput
if (STATS_max - STATS_min < 1e-3) { set yrange [STATS_min - 0.05:STATS_max + 0.05] }
set key bottom right
plot ARG1 using 1:4 with linespoints pointtype 7 pointsize 0.4 linecolor 2 notitle
unset multiplot
