"""flows room: see DESIGN.md."""
