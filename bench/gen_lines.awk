# Deterministic InfluxDB line protocol for the benchmark bodies: LINES points of about
# 130 bytes (4 tags, 6 fields, a timestamp in seconds), pseudo-random values from SEED
# so that gzip sees realistic, not degenerate, input.
#   awk -v SEED=1 -v LINES=8 -f gen_lines.awk
BEGIN {
  srand(SEED)
  for (i = 0; i < LINES; i++) {
    printf "cpu,host=sensor-%04d,region=eu-west-%d,rack=r%02d usage_user=%.2f,usage_system=%.2f,usage_idle=%.2f,temp=%.1f,load=%di %d\n",
      i % 5000, i % 3, i % 40, rand() * 100, rand() * 20, rand() * 100, 30 + rand() * 40,
      int(rand() * 1000), 1700000000 + i
  }
}
