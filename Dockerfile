# Image for the API and the worker (docker-compose.yml runs both from it).
FROM node:20-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY . .
ENV NODE_ENV=production
EXPOSE 8000
CMD ["node", "--import", "tsx", "run-api.ts"]
