"""Media projects (image, video, audio): the catalog, project state and validation, the projects
manager and its REST routes. Renders are scheduled with the chat jobs (``_jobs``)."""
