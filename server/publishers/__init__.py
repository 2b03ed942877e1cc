"""Publishers: put an unpacked image and its index update into a publish root atomically."""
