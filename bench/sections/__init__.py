"""bench/run.py's sections, one module each: its docstring says what it measures, and
`measure(args)` runs it with bench/run.py's parsed options and returns the report's section,
(title, markdown). bench/run.py's SECTIONS names them; bench/harness.py holds what they share."""
