"""The differential fuzzer: random valid modules written as source (`generator`), compiled and
checked against eager on every backend, failures minimised into regression tests (`campaign`).
`tilefuse fuzz` runs it; `tests/fuzz/` holds its fixed-seed batch and what it found."""
