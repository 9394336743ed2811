# confidence: rules come here
