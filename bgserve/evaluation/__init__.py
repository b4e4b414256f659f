"""The golden-set comparison, pure like the domain: cases, assertions, scorers, prompt
contents, structured-output checks, judgements and verdicts. No I/O, no clock.
"""
