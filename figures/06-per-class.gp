# figures/06-per-class.gp: chapter 6, the validation accuracy of each breed, one bar per run.
#   gnuplot -c figures/06-per-class.gp results/06-comparison.per-class.csv OUT.pdf
# The CSV (written by build/06-comparison) has columns class_id,class,images and then one column
# of accuracies per run, titled with the run's name.
if (ARGC < 2) { print "usage: gnuplot -c figures/06-per-class.gp PER-CLASS.csv OUT.pdf"; exit status 2 }
set terminal pdfcairo size 17cm,9cm font "DejaVu Sans,8"
set output ARG2
set datafile separator ","
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by 60 right scale 0 nomirror
set ylabel "validation accuracy"
set yrange [0:1.05]
set ytics 0.2
set grid ytics
set key outside top center horizontal
plot for [c=4:*] ARG1 using c:xtic(2) title columnheader(c)
