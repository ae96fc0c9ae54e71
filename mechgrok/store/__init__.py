"""The file formats: the trajectory schema and its live-safe reader, the writer, the resume
slots, atomic outputs and locks, and the xarray backend. No torch here."""
