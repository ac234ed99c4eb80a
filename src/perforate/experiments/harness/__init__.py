"""What every harness command shares: run settings and their checks, the training loop and its
early stopper, the results file, the perforatedai ``reference`` arm, progress bars and the
common command-line options."""
