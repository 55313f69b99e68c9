"""experts room: see DESIGN.md."""
