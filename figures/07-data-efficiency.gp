# figures/07-data-efficiency.gp: chapter 7, test accuracy against training images per breed.
#   gnuplot -c figures/07-data-efficiency.gp results/07-data-efficiency.summary.csv OUT.pdf \
#           X_FULL ACC_04 ACC_05
# The summary (written by build/07-data-efficiency) has one line per method and k:
#   method,k,per_breed,runs,acc_mean,acc_std,acc_min,acc_max   (per_breed: mean images per breed)
# Each method is a curve through its means (log x axis: images per breed); the bars span the
# lowest to the highest run of the seeds. X_FULL is the number of images per breed of the whole
# training split, ACC_04 and ACC_05 the final accuracies of chapters 4 and 5 (their results JSON;
# "nan" for a chapter that has not run): drawn as single marked points at X_FULL.
if (ARGC < 5) { print "usage: gnuplot -c figures/07-data-efficiency.gp SUMMARY.csv OUT.pdf X_FULL ACC_04 ACC_05"; exit status 2 }
data = ARG1
x_full = real(ARG3)
acc04 = ARG4 eq "nan" || ARG4 eq "" ? NaN : real(ARG4)
acc05 = ARG5 eq "nan" || ARG5 eq "" ? NaN : real(ARG5)
set terminal pdfcairo size 14cm,10cm font "DejaVu Sans,10" linewidth 1.5
set output ARG2
set datafile separator ","
set datafile missing "nan"
set logscale x
set xtics (1, 2, 5, 10, 20, 50, 100, 200) nomirror
set xrange [0.8:x_full * 1.6]
set yrange [0:1.02]
set ytics 0.1
set grid
set key below maxrows 3
set xlabel "training images per breed (log scale)"
set ylabel "test accuracy"
methods = "prototype knn1 knn5 fe ft"
title(m) = m eq "prototype" ? "nearest class mean" : m eq "knn1" ? "1-NN (cosine)" : \
           m eq "knn5" ? "5-NN (cosine)" : m eq "fe" ? "feature extraction" : "fine-tuning"
# column 1 selects the method; other lines give NaN and are left out
pick(m, col) = strcol(1) eq m ? column(col) : NaN
plot for [i=1:words(methods)] data using (pick(word(methods, i), 3)):5:7:8 \
       with yerrorlines pointtype 7 pointsize 0.5 title title(word(methods, i)), \
     '+' using (x_full):(acc04) every ::0::0 with points pointtype 4 pointsize 1.6 \
       linecolor rgb "black" title "chapter 4 (all images, its recipe)", \
     '+' using (x_full):(acc05) every ::0::0 with points pointtype 6 pointsize 1.6 \
       linecolor rgb "black" title "chapter 5 (all images, its recipe)"
