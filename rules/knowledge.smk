# knowledge: rules come here
