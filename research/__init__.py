"""Research tools: experiments that ask what training learns (probes, drift, a supervised
ceiling), apart from the library and its speed benchmarks; their results are in results/."""

from wavlejepa import runtime

# The tools here import TensorFlow (through the trainer) before their flags are parsed: its
# import banner and C++ INFO lines would come before a flag's one-line error.
runtime.quiet_imports()
