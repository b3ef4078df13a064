"""The API's docs, served by the service itself: the OpenAPI document (`spec`) and a
Swagger UI page whose assets are local files (`site`): opening the docs calls nothing
outside the service."""
