"""Research tools: experiments that ask what training learns (probes, drift, a supervised
ceiling), apart from the library and its speed benchmarks; their results are in results/."""
