"""Work orders and service levels: every fault, complaint and lapse becomes tracked work with
a deadline (rules S1-S6)."""
