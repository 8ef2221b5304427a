"""Software: golden models and host-side scheduling for the generated hardware."""
