# truth: rules come here
