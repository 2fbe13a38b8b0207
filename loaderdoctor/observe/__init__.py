"""The parent measuring a running child: process-tree sampling, stacks, ending process
trees, environment, GPU. Imports the shared records and itself."""
