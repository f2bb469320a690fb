"""Leader services that run beside a node: ingest (the writes queue, judged by
write_rules), fan-out (committed messages in index order) and replay (gap fills for
subscribers); leading runs a service only while its node leads."""
