# imagegen benchmarks (issue 8): `make bench` runs the benchmarks in bench/ and
# rewrites docs/BENCHMARKS.md with this machine's figures. Included by the root Makefile.
BENCH_OUT ?= docs/BENCHMARKS.md
BENCH_RUN ?=

.PHONY: bench

bench: test-deps
	$(GO) run ./bench/cmd/benchrun -out $(BENCH_OUT) $(if $(BENCH_RUN),-run '$(BENCH_RUN)')
