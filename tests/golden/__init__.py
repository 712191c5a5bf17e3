"""Golden reference outputs of the parity tests, and the code that produces them.

``store.py`` reads, writes and compares goldens; each ``cases_<name>.py`` module holds the cases
of one target (a name -> callable registry); ``regenerate.py`` rebuilds the JSON files.
"""
