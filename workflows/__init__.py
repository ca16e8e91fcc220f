"""The workflows (one complaint; the yearly analysis), their activity options, and the analysis schedule."""
