# refusal: rules come here
