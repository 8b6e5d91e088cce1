"""The answer loop: retrieve, filter, judge, search again or abstain, generate. Knows no HTTP."""
