# figures/06-confusion.gp: chapter 6, the confusion matrix of one final model as a heat map.
#   gnuplot -c figures/06-confusion.gp results/06-comparison.confusion-RUN.dat OUT.pdf "TITLE"
# The data file (written by build/06-comparison) is a CSV matrix with the class names as its first
# row and column; entry (t, p) is the fraction of the validation images of true class t that the
# model called p, so each row sums to 1 and a perfect model has a dark diagonal.
if (ARGC < 3) { print "usage: gnuplot -c figures/06-confusion.gp CONFUSION.dat OUT.pdf TITLE"; exit status 2 }
set terminal pdfcairo size 16cm,15cm font "DejaVu Sans,7"
set output ARG2
set datafile separator ","
set title ARG3 font ",10"
set xlabel "predicted breed" font ",9"
set ylabel "true breed" font ",9"
set xtics rotate by 60 right scale 0
set ytics scale 0
set yrange [*:*] reverse
set size ratio -1
set cbrange [0:1]
set cblabel "fraction of the true breed's images"
set palette defined (0 "white", 0.15 "#c6dbef", 0.5 "#4292c6", 1 "#08306b")
plot ARG1 matrix rowheaders columnheaders using 1:2:3 with image notitle
