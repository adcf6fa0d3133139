# Weak-scaling efficiency and MFU of the projected SDXL step per placement (scaling_model --tsv),
# for two runs of the model (e.g. dist.max_gathered_units 2 and 4). docs/scaling.md shows the result.
# Usage: gnuplot -e "a='ring2.tsv'; b='ring4.tsv'; la='ring 2'; lb='ring 4'; out='scaling.png'" bench/plot_scaling.gp
set terminal pngcairo size 1200,480 font ",11"
set output out
set multiplot layout 1,2
set logscale x 2
set xrange [6:640]
set xtics (8, 16, 32, 64, 128, 256, 512)
set xlabel "GPUs (8 per node)"
set grid
set key bottom left
sel(p, col) = strcol(1) eq p ? column(col) * 100 : NaN
set title "weak-scaling efficiency, step(1 GPU) / step(N)"
set ylabel "%"
set yrange [40:105]
P = "full node replicate"
plot for [i=1:3] a using 2:(sel(word(P, i), 4)) with linespoints dt 2 lc i title word(P, i)." (".la.")", \
     for [i=1:3] b using 2:(sel(word(P, i), 4)) with linespoints lw 2 lc i title word(P, i)." (".lb.")", \
     90 with lines lc rgb "gray" dt 3 title "90 %"
set title "MFU (forward + backward FLOPs / step / peak)"
set yrange [10:30]
plot for [i=1:3] a using 2:(sel(word(P, i), 5)) with linespoints dt 2 lc i title word(P, i)." (".la.")", \
     for [i=1:3] b using 2:(sel(word(P, i), 5)) with linespoints lw 2 lc i title word(P, i)." (".lb.")"
unset multiplot
